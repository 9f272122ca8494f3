"""What the host writes to and reads from the accelerator's bus for a program: memory images
as 32-bit bus words (`memmap` regions) and activation readback."""

from __future__ import annotations

import numpy as np

from . import golden, layout, memmap
from .descriptor import LayerDescriptor


def bus_words(data: np.ndarray, row_bytes: int) -> np.ndarray:
    """uint8 rows of ``row_bytes`` -> uint32 bus words (one per narrow row, packed otherwise)."""
    data = np.ascontiguousarray(data, np.uint8)
    if row_bytes >= 4:
        return data.view("<u4").astype(np.uint32)
    rows = data.reshape(-1, row_bytes)
    return sum(rows[:, b].astype(np.uint32) << (8 * b) for b in range(row_bytes))


def from_bus_words(words: np.ndarray, row_bytes: int) -> np.ndarray:
    """Inverse of `bus_words`: uint32 bus words -> uint8 bytes."""
    words = np.asarray(words, np.uint32)
    if row_bytes >= 4:
        return words.astype("<u4").view(np.uint8)
    return np.stack([(words >> (8 * b)) & 0xFF for b in range(row_bytes)], 1) \
        .astype(np.uint8).reshape(-1)


def program_image(program) -> list[tuple[int, np.ndarray]]:
    """``(bus address, uint32 words)`` blocks that load ``program``'s descriptors, parameters and
    weights."""
    cfg, plan = program.config, program.plan
    blocks = [(memmap.address(memmap.PROGRAM),
               np.array([w for d in program.descriptors for w in d.to_words()], np.uint32))]
    for i, layer in enumerate(program.layers):
        blocks.append((memmap.address(memmap.PARAMS,
                                      plan.param[i][0] * memmap.PARAM_ENTRY_WORDS),
                       layout.pack_params(layer, cfg)))
        row = cfg.pe_out * cfg.pe_in
        words = bus_words(layout.pack_weights(layer, cfg), row)
        blocks.append((memmap.address(memmap.WEIGHTS, _word_offset(plan.weight[i][0], row)), words))
    return blocks


def _word_offset(byte_addr: int, row_bytes: int) -> int:
    return byte_addr // 4 if row_bytes >= 4 else byte_addr // row_bytes


def _bank_address(bank: int, byte_addr: int, pe_in: int) -> int:
    return memmap.address(memmap.BANK0 + bank, _word_offset(byte_addr, pe_in))


def input_image(program, xq: np.ndarray) -> tuple[int, np.ndarray]:
    """``(bus address, words)`` of one int8 ``C x H x W`` input image (unfolded if the program
    unfolds its input on the host)."""
    x = golden.layer_inputs(program.graph, xq[None])[0]
    bank, addr, _ = program.plan.act_in[0]
    data = layout.pack_activation(x, program.config)
    return _bank_address(bank, addr, program.config.pe_in), bus_words(data, program.config.pe_in)


def output_location(program, index: int) -> tuple[int, int]:
    """``(bus address, word count)`` of layer ``index``'s output map."""
    bank, addr, size = program.plan.act_out[index]
    pi = program.config.pe_in
    return _bank_address(bank, addr, pi), size // 4 if pi >= 4 else size // pi


def decode_output(program, index: int, words: np.ndarray) -> np.ndarray:
    """Bus words read from `output_location` -> int8 output of layer ``index``."""
    layer = program.layers[index]
    data = from_bus_words(words, program.config.pe_in)
    return layout.unpack_activation(data, layer.out_shape, program.config)


DESCRIPTOR_WORDS = LayerDescriptor.WORDS
