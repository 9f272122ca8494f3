"""What the host writes to and reads from the accelerator's bus for a program: memory images
as 32-bit bus words (`memmap` regions, each memory's bus view from `memmap.MemoryShape`) and
activation readback."""

from __future__ import annotations

import numpy as np

from ..golden import model as golden
from ..ir.graph import INPUT, map_shape
from ..mapping import depthwise, layout, memmap


def program_image(program) -> list[tuple[int, np.ndarray]]:
    """``(bus address, uint32 words)`` blocks that load ``program``'s descriptors, parameters,
    weights and activation tables."""
    cfg, plan = program.config, program.plan
    weights = memmap.memories(cfg)[memmap.WEIGHTS]
    blocks = [(memmap.address(memmap.PROGRAM),
               np.array([w for d in program.descriptors if d for w in d.to_words()], np.uint32))]
    for i, layer in enumerate(program.layers):
        if layer.op != "conv":          # an add reads neither weights nor parameters
            continue
        blocks.append((memmap.address(memmap.PARAMS,
                                      plan.param[i][0] * memmap.PARAM_ENTRY_WORDS),
                       layout.pack_params(layer, cfg)))
        packed = depthwise.pack_weights(layer, cfg) if plan.depthwise[i] else \
            layout.pack_weights(layer, cfg, plan.merged[i])
        blocks.append((memmap.address(memmap.WEIGHTS, weights.bus_offset(plan.weight[i][0])),
                       weights.to_bus(packed)))
    for slot, table in enumerate(plan.tables):
        blocks.append((memmap.address(memmap.TABLES, slot * memmap.TABLE_WORDS),
                       np.ascontiguousarray(table).view("<u4").astype(np.uint32)))
    return blocks


def _act(program, byte_addr: int):
    """(bus address, memory shape) of a byte address in the activation memory."""
    shape = memmap.memories(program.config)[memmap.ACT]
    return memmap.address(memmap.ACT, shape.bus_offset(byte_addr)), shape


def input_image(program, xq: np.ndarray) -> tuple[int, np.ndarray]:
    """``(bus address, words)`` of one int8 ``C x H x W`` (or ``F``) input (unfolded if the program
    unfolds its input on the host)."""
    x = golden.layer_inputs(program.graph, xq[None])[0]
    x = x.reshape(map_shape(x.shape))
    addr, shape = _act(program, program.plan.tensors[INPUT][0])
    return addr, shape.to_bus(layout.pack_activation(x, program.config))


def output_location(program, index: int) -> tuple[int, int]:
    """``(bus address, word count)`` of layer ``index``'s output map (of a streamed program:
    one it keeps on chip)."""
    byte_addr, size = program.plan.act_out[index] if program.stream is None else \
        program.stream.kept[index]
    addr, shape = _act(program, byte_addr)
    return addr, shape.bus_offset(size)


def decode_output(program, index: int, words: np.ndarray) -> np.ndarray:
    """Bus words read from `output_location` -> int8 output of layer ``index``."""
    shape = memmap.memories(program.config)[memmap.ACT]
    return layout.unpack_activation(shape.from_bus(words), program.layers[index].out_shape,
                                    program.config)


# A streamed program (`striate.sw.mapping.stream`): what lives in external memory, and the
# program memory's first slots and the tables on chip.

def ext_image(program) -> list[tuple[int, np.ndarray]]:
    """``(external byte address, uint8 bytes)`` blocks of a streamed program: each layer's
    weights and parameters, and every descriptor."""
    cfg, stream = program.config, program.stream
    blocks = []
    for i, layer in enumerate(program.layers):
        if stream.weights[i] is None:
            continue
        pack = depthwise.pack_weights if stream.depthwise[i] else layout.pack_weights
        blocks.append((stream.weights[i][0], pack(layer, cfg)))
        blocks.append((stream.params[i][0],
                       layout.pack_params(layer, cfg).astype("<u4").view(np.uint8)))
    words = np.array([w for d in stream.descriptors for w in d.to_words()], "<u4")
    blocks.append((stream.program, words.view(np.uint8)))
    return blocks


def stream_slots(program) -> list[tuple[int, np.ndarray]]:
    """``(bus address, words)`` of what a streamed program keeps on chip: the descriptors the
    program memory holds at the start (the rest come in as it runs) and the tables."""
    stream, depth = program.stream, program.config.program_depth
    blocks = [(memmap.address(memmap.PROGRAM),
               np.array([w for d in stream.descriptors[:depth] for w in d.to_words()],
                        np.uint32))]
    for slot, table in enumerate(stream.tables):
        blocks.append((memmap.address(memmap.TABLES, slot * memmap.TABLE_WORDS),
                       np.ascontiguousarray(table).view("<u4").astype(np.uint32)))
    return blocks


def input_ext(program, xq: np.ndarray) -> tuple[int, np.ndarray]:
    """``(external byte address, bytes)`` of one input of a streamed program."""
    x = golden.layer_inputs(program.graph, xq[None])[0]
    x = x.reshape(map_shape(x.shape))
    return program.stream.tensors[INPUT][0], layout.pack_activation(x, program.config)


def output_ext(program, index: int) -> tuple[int, int]:
    """``(external byte address, bytes)`` of layer ``index``'s output in a streamed program."""
    return program.stream.tensors[program.layers[index].name]


def decode_ext(program, index: int, data: np.ndarray) -> np.ndarray:
    """Bytes read from `output_ext` -> int8 output of layer ``index``."""
    return layout.unpack_activation(data, program.layers[index].out_shape, program.config)
