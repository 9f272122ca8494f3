"""The program file format (``.stp``), version 6.

Layout: 8-byte magic ``b"STRIATE\\0"``, format version (uint16 LE), reserved uint16 (0), payload
length (uint64 LE), SHA-256 of the payload (32 bytes), then the payload: a uint32 LE length, a
UTF-8 JSON header and a binary blob of little-endian arrays the header indexes.

The header stores the config, the scales, the host-side input unfold (if any), the name of the
output tensor, and per layer its name, module paths, the tensors it reads (`INPUT` or earlier
layers' names), output scale, its descriptor as 32-bit words and its arrays. A concatenation has
no descriptor (an empty list) and no arrays; its shape follows from its inputs'. Version 1 files
(chains in two ping-pong banks) are refused with a message that says to recompile. A valid checksum
only proves the file is intact, not that it was written by `save_program`, so loading checks
everything it reads (docs/program-format.md lists the checks): the header's JSON types, every
layer's geometry (rebuilt from its descriptor) and arrays against the numerics contract, the
graph (every tensor read is written first, shapes agree from the input to the output), the host-side unfold (re-derived with
`unfold.im2col_input`), the int32 accumulator bound (`numerics.accumulator_bound`), and that the
mapper reproduces the stored descriptors. A file either loads as a program the compiler could
have produced or raises `ProgramFormatError` naming the file and the field or layer at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import reprlib
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..ir import numerics
from ..config import AcceleratorConfig, MemoryTiming
from ..mapping.descriptor import LayerDescriptor
from ..errors import ProgramFormatError, StriateError
from ..ir.graph import INPUT, QGraph, QLayer, map_shape
from ..ir.kernels import out_size
from ..mapping.mapper import geometry
from ..ir.passes import IDENTITY_MULT, IDENTITY_SHIFT
from ..mapping.unfold import im2col_input

MAGIC = b"STRIATE\0"
FORMAT_VERSION = 6
OLD_VERSIONS = {1: "chains in two ping-pong activation banks",
                2: "layer descriptors without the wait and stamp bits",
                3: "layer descriptors without the partial-sum bits",
                4: "layer descriptors without the pixel pair bit",
                5: "layer descriptors without the merged-lane bit"}
_HEADER = struct.Struct("<8sHHQ32s")
# Per layer, in blob order: dtype and number of dimensions of each array.
_ARRAYS = {"weight": ("<i1", 4), "bias": ("<i4", 1), "mult": ("<i4", 1), "shift": ("<u1", 1),
           "table": ("<i1", 1)}     # a table only with a function by table
_HEADER_FIELDS = ("config", "input_shape", "input_scale", "output_shape", "input_im2col",
                  "metadata", "output", "layers", "memory")
# files written before programs carried metadata lack it; "memory" (the external memory
# timing a program was planned for, and its streaming mode) comes with external memory
_OPTIONAL = ("metadata", "memory")
_LAYER_FIELDS = ("name", "sources", "inputs", "out_scale", "descriptor", "arrays", "groups",
                 "dilation", "pad_extra", "channel_offset")
# files written before grouped or dilated convolutions, one-sided padding or split grouped
# convolutions lack them: 1, (1, 1), (0, 0), 0
_LAYER_OPTIONAL = ("groups", "dilation", "pad_extra", "channel_offset")
_ARRAY_FIELDS = ("dtype", "shape", "offset", "nbytes")
_WORD_MAX = (1 << 32) - 1


def _encode(program) -> bytes:
    blob, layers = bytearray(), []
    for layer, desc in zip(program.layers, program.layer_descriptors):
        arrays = {}
        for name, (dtype, _) in _ARRAYS.items():
            value = getattr(layer, name)
            if value is None:
                continue
            data = np.ascontiguousarray(value, dtype=dtype).tobytes()
            arrays[name] = {"dtype": dtype, "shape": list(value.shape), "offset": len(blob),
                            "nbytes": len(data)}
            blob += data
        layers.append({"name": layer.name, "sources": list(layer.sources),
                       "inputs": list(layer.inputs),
                       "out_scale": layer.out_scale, "groups": layer.groups,
                       "dilation": list(layer.dilation), "pad_extra": list(layer.pad_extra),
                       "channel_offset": layer.channel_offset,
                       "descriptor": desc.to_words() if desc else [],
                       "arrays": arrays})
    g = program.graph
    header = {"config": program.config.to_dict(), "input_shape": list(g.input_shape),
              "input_scale": g.input_scale, "output_shape": list(g.output_shape),
              "input_im2col": list(g.input_im2col), "metadata": program.metadata,
              "output": g.output, "layers": layers}
    if program.config.ext_bytes:
        header["memory"] = {"latency": program.timing.latency,
                            "bytes_per_cycle": program.timing.bytes_per_cycle,
                            "streaming": program.streaming}
    text = json.dumps(header, sort_keys=True).encode()
    return struct.pack("<I", len(text)) + text + bytes(blob)


def _path(path, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise StriateError(f"{what} path must be a file name, not {path!r}")
    return Path(path)


def save_program(program, path) -> None:
    """Write ``program`` to ``path`` atomically: a crash leaves the old file or none. A path
    that cannot be written raises `StriateError` naming it."""
    path = _path(path, "program file")
    payload = _encode(program)
    data = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload),
                        hashlib.sha256(payload).digest()) + payload
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    except OSError as exc:
        raise StriateError(f"cannot write program file {str(path)!r}: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StriateError(f"cannot write program file {str(path)!r}: {exc}") from None
        raise


# -- typed reads of the JSON header: each returns the value or raises naming the field ---------

def _bad(where: str, what: str, expected: str, value) -> ProgramFormatError:
    return ProgramFormatError(f"{where}: {what} must be {expected}, not {reprlib.repr(value)}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _memory(value, config: AcceleratorConfig, where: str) -> tuple:
    """The ``memory`` header entry: (timing, streaming mode)."""
    if value is None:
        return None, "auto"
    if not config.ext_bytes:
        raise ProgramFormatError(f"{where}: memory must be absent on a configuration without "
                                 f"external memory (ext_bytes 0)")
    value = _fields(value, "memory", where, ("latency", "bytes_per_cycle", "streaming"))
    try:
        timing = MemoryTiming(value["latency"], value["bytes_per_cycle"])
    except StriateError as exc:
        raise ProgramFormatError(f"{where}: memory: {exc}") from None
    from .program import STREAMING
    if value["streaming"] not in STREAMING:
        raise _bad(where, "memory streaming", f"one of {list(STREAMING)}", value["streaming"])
    return timing, value["streaming"]


def _fields(value, what: str, where: str, fields: tuple, optional: tuple = ()) -> dict:
    """A JSON object with exactly ``fields`` (those in ``optional`` may be absent)."""
    if not isinstance(value, dict):
        raise _bad(where, what, "a JSON object", value)
    missing = [f for f in fields if f not in value and f not in optional]
    if missing or set(value) - set(fields):
        raise ProgramFormatError(f"{where}: {what} must have the fields {sorted(fields)}"
                                 f"{f' ({sorted(optional)} optional)' if optional else ''}, "
                                 f"not {sorted(value)}")
    return value


def _str(value, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, what, "a string", value)
    return value


def _ints(value, what: str, where: str, length: int | None = None, lo: int = 0,
          hi: int | None = None) -> tuple:
    """A list of integers (not bools) in ``[lo, hi]``, of ``length`` when given."""
    if not (isinstance(value, list) and (length is None or len(value) == length)
            and all(_is_int(v) and v >= lo and (hi is None or v <= hi) for v in value)):
        count = "" if length is None else f"{length} "
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise _bad(where, what, f"a list of {count}integers {bounds}", value)
    return tuple(value)


def _scale(value, what: str, where: str) -> float:
    """A scale: a finite number > 0 (an integer too; JSON does not tell 2.0 from 2)."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:       # an integer beyond float range
            pass
    if number is None or not (math.isfinite(number) and number > 0):
        raise _bad(where, what, "a finite number > 0", value)
    return number


def _object(pairs: list) -> dict:
    """`json.loads` hook: a JSON object, refusing duplicate keys (which one would win?)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {key!r}")
    return obj


def _dims(shape) -> str:
    return "x".join(map(str, shape))


# -- decoding ----------------------------------------------------------------------------------

def _array(blob: bytes, spec, name: str, pos: int, where: str) -> tuple[np.ndarray, int]:
    """Array ``name`` of a layer; it must start at byte ``pos`` of the blob (arrays are stored
    back to back in layer order). Returns the array and where the next one starts."""
    dtype, ndim = _ARRAYS[name]
    what = f"arrays.{name}"
    spec = _fields(spec, what, where, _ARRAY_FIELDS)
    if spec["dtype"] != dtype:
        raise _bad(where, f"{what}.dtype", repr(dtype), spec["dtype"])
    shape = _ints(spec["shape"], f"{what}.shape", where, ndim)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if not _is_int(spec["offset"]) or spec["offset"] != pos:
        raise _bad(where, f"{what}.offset", f"{pos} (the end of the array before it)",
                   spec["offset"])
    if not _is_int(spec["nbytes"]) or spec["nbytes"] != nbytes:
        raise _bad(where, f"{what}.nbytes", f"{nbytes} ({_dims(shape)} of {dtype})",
                   spec["nbytes"])
    if pos + nbytes > len(blob):
        raise ProgramFormatError(f"{where}: {what} of {list(shape)} {dtype} must lie inside the "
                                 f"blob of {len(blob)} bytes, not end at byte {pos + nbytes}")
    return np.frombuffer(blob, dtype, math.prod(shape), pos).reshape(shape), pos + nbytes


def _decode_layer(entry, index: int, blob: bytes, pos: int, file: str):
    """Layer ``index``: returns ``(QLayer, stored LayerDescriptor, end of its arrays)``."""
    where = f"{file}: layer {index}"
    entry = _fields(entry, f"layer {index}", file, _LAYER_FIELDS, _LAYER_OPTIONAL)
    name = _str(entry["name"], "name", where)
    where = f"{file}: layer {name!r}"
    if not (isinstance(entry["sources"], list)
            and all(isinstance(s, str) for s in entry["sources"])):
        raise _bad(where, "sources", "a list of strings (PyTorch module paths)", entry["sources"])
    inputs = entry["inputs"]
    if not (isinstance(inputs, list) and inputs and all(isinstance(s, str) for s in inputs)):
        raise _bad(where, "inputs", "a non-empty list of tensor names", inputs)
    out_scale = _scale(entry["out_scale"], "out_scale", where)
    if entry["descriptor"] == []:       # a concatenation: `_concat_shapes` sets its shapes
        _fields(entry["arrays"], "arrays", where, ())
        layer = QLayer(name=name, op="concat", in_shape=(), out_shape=(),
                       sources=tuple(entry["sources"]), inputs=tuple(inputs), out_scale=out_scale)
        return layer, None, pos
    words = list(_ints(entry["descriptor"], "descriptor", where, LayerDescriptor.WORDS, 0,
                       _WORD_MAX))
    desc = LayerDescriptor.from_words(words)
    if desc.to_words() != words:
        raise _bad(where, "descriptor", f"{LayerDescriptor.total_bits()} bits of fields with the "
                   "rest of its last word 0", words)
    try:
        fields = geometry(desc)
    except StriateError as exc:
        raise ProgramFormatError(f"{where}: {exc}") from None
    # an add has no arrays; a convolution's table is there when its descriptor names one
    wanted = tuple(name for name in _ARRAYS if name != "table" or desc.table) \
        if fields["op"] == "conv" else ()
    specs = _fields(entry["arrays"], "arrays", where, wanted)
    arrays = {}
    for key in wanted:
        arrays[key], pos = _array(blob, specs[key], key, pos, where)
    if fields["op"] == "add":
        if len(inputs) != 2:
            raise _bad(where, "inputs", "two tensor names for an add", inputs)
        layer = QLayer(name=name, sources=tuple(entry["sources"]), inputs=tuple(inputs),
                       out_scale=out_scale, **fields)
        _check_add(layer, where)
        return layer, desc, pos
    if len(inputs) != 1:
        raise _bad(where, "inputs", "one tensor name for a convolution", inputs)
    # The kernel lives only in the weights' shape; the rest QLayer.check compares itself.
    kernel = (desc.out_c, desc.in_c, desc.k_h, desc.k_w)
    if arrays["weight"].shape != kernel:
        raise ProgramFormatError(f"{where}: weight must have shape {kernel} as its descriptor "
                                 f"says, not {arrays['weight'].shape}")
    groups = entry.get("groups", 1)
    if not _is_int(groups) or groups < 1:
        raise _bad(where, "groups", "an integer >= 1", groups)
    dilation = entry.get("dilation", [1, 1])
    if not (isinstance(dilation, list) and len(dilation) == 2
            and all(_is_int(d) and d >= 1 for d in dilation)):
        raise _bad(where, "dilation", "two integers >= 1", dilation)
    extra = entry.get("pad_extra", [0, 0])
    if not (isinstance(extra, list) and len(extra) == 2 and all(_is_int(e) for e in extra)):
        raise _bad(where, "pad_extra", "two integers (0 or 1)", extra)
    offset = entry.get("channel_offset", 0)
    if not _is_int(offset) or offset < 0:
        raise _bad(where, "channel_offset", "an integer >= 0", offset)
    layer = QLayer(name=name, sources=tuple(entry["sources"]), inputs=tuple(inputs),
                   out_scale=out_scale, **fields, groups=groups, dilation=tuple(dilation),
                   pad_extra=tuple(extra), channel_offset=offset,
                   weight=arrays["weight"].astype(np.int8), bias=arrays["bias"].astype(np.int32),
                   mult=arrays["mult"].astype(np.int64), shift=arrays["shift"].astype(np.int64),
                   table=arrays["table"].astype(np.int8) if "table" in arrays else None)
    try:
        layer.check()
    except StriateError as exc:
        raise ProgramFormatError(f"{file}: {exc}") from None
    _check_layer(layer, where)
    return layer, desc, pos


def _check_clamp(layer: QLayer, where: str) -> None:
    lo, hi = layer.lo, layer.hi
    if lo not in (numerics.INT8_MIN, 0) or not 0 <= hi <= numerics.INT8_MAX:
        raise _bad(where, "clamp [lo, hi]", f"[{numerics.INT8_MIN} or 0 (a fused ReLU), 0 to "
                   f"{numerics.INT8_MAX}]", [lo, hi])


def _check_add(layer: QLayer, where: str) -> None:
    """An add: a map of sizes >= 1, a clamp as for a convolution, a shift of at least 1."""
    if min(layer.in_shape) < 1:
        raise _bad(where, "in_shape", ">= 1 in every dimension", list(layer.in_shape))
    _check_clamp(layer, where)
    if not numerics.ADD_SHIFT_MIN <= layer.add_shift <= numerics.ADD_SHIFT_MAX:
        raise _bad(where, "add_shift", f"in [{numerics.ADD_SHIFT_MIN}, "
                   f"{numerics.ADD_SHIFT_MAX}]", layer.add_shift)


def _check_layer(layer: QLayer, where: str) -> None:
    """What the compiler guarantees of one lowered layer beyond `QLayer.check`."""
    for what, value in (("in_shape", layer.in_shape), ("out_shape", layer.out_shape),
                        ("kernel", layer.kernel), ("stride", layer.stride),
                        ("pool_kernel", layer.pool_kernel), ("pool_stride", layer.pool_stride)):
        if min(value) < 1:
            raise _bad(where, what, ">= 1 in every dimension", list(value))
    w = layer.weight
    if w.min() < -numerics.WEIGHT_MAX:
        raise ProgramFormatError(f"{where}: weights must be in [-{numerics.WEIGHT_MAX}, "
                                 f"{numerics.WEIGHT_MAX}] (symmetric int8), not {int(w.min())}")
    _check_clamp(layer, where)
    o, ch, cw = layer.conv_shape
    if min(ch, cw) < 1:
        raise ProgramFormatError(f"{where}: kernel {_dims(layer.kernel)} must fit the "
                                 f"{_dims(layer.in_shape)} input, not give {_dims((o, ch, cw))}")
    pool = (tuple(layer.pool_kernel), tuple(layer.pool_stride), tuple(layer.pool_padding))
    scaler = [int(layer.pool_mult), int(layer.pool_shift)]
    if layer.pool == "none":
        if pool != ((1, 1), (1, 1), (0, 0)):
            raise _bad(where, "pool_kernel, pool_stride, pool_padding", "[[1, 1], [1, 1], "
                       "[0, 0]] without pooling", [list(p) for p in pool])
        want = (o, ch, cw)
    else:
        # PyTorch's rule; it also keeps every window on the map, so a max pool never emits
        # its padding value (`_check_accumulators` relies on that).
        if any(2 * p > k for k, p in zip(pool[0], pool[2])):
            raise _bad(where, "pool_padding", f"at most half the {_dims(pool[0])} pool window",
                       list(pool[2]))
        want = (o,) + tuple(out_size(n, k, s, p) for n, k, s, p in zip((ch, cw), *pool))
    if layer.pool == "avg":
        if not (1 <= scaler[0] < 1 << numerics.MULT_BITS
                and numerics.SHIFT_MIN <= scaler[1] <= numerics.SHIFT_MAX):
            raise _bad(where, "pool_mult, pool_shift", f"in [1, 2**{numerics.MULT_BITS}) and "
                       f"[{numerics.SHIFT_MIN}, {numerics.SHIFT_MAX}] for average pooling",
                       scaler)
    elif scaler != [0, 0]:
        raise _bad(where, "pool_mult, pool_shift", "[0, 0] without average pooling", scaler)
    if tuple(layer.out_shape) != want:
        what = "convolution" if layer.pool == "none" else f"convolution and {layer.pool} pooling"
        raise ProgramFormatError(f"{where}: output shape {_dims(layer.out_shape)} must be "
                                 f"{_dims(want)}, what its {what} make of {_dims(layer.in_shape)}")


def _passes_through(layer: QLayer) -> bool:
    """A copy with a unit multiplier and max or no pooling (an identity convolution from
    `passes.lower_pool_layers`, or one of `concat.place_concats`' copies): it emits values of
    its input or 0, clamped, as the clamp, max pooling or placement it stands for. (Every range
    holds 0: clamps are [-128 or 0, 0 to 127].)"""
    return (layer.is_copy and bool(np.all(layer.mult == IDENTITY_MULT))
            and bool(np.all(layer.shift == IDENTITY_SHIFT)) and layer.pool != "avg")


def _check_accumulators(graph: QGraph, where: str) -> None:
    """Prove the int32 accumulator bound of every layer again with the compiler's functions.

    ``max|x|`` is that of the layer input's range as `quantize.quantize_graph` tracks it: any
    int8 for the network input, the clamp of the layer that writes it, narrowed through
    layers that only clamp and max-pool (their identity convolutions) and through copies. ``K``
    counts the input channels with a nonzero weight (times the kernel size): the zero channels
    `concat.place_concats` adds to a concatenation, and the zero weight columns of the layers
    reading it, leave the compiler's bound as it was."""
    ranges = {INPUT: (numerics.INT8_MIN, numerics.INT8_MAX)}     # the network input: any int8
    for layer in graph.layers:
        rng = ranges[layer.inputs[0]]
        if layer.op == "concat":
            parts = [ranges[name] for name in layer.inputs]
            ranges[layer.name] = (min(p[0] for p in parts), max(p[1] for p in parts))
            continue
        if layer.op == "add":
            ranges[layer.name] = (layer.lo, layer.hi)
            continue
        o, c, kh, kw = layer.weight.shape
        w = np.abs(layer.weight.astype(np.int64).reshape(o, c, kh * kw))
        # each output channel reads one group's channels, zero channels left out
        fan_in = min(int(w.any(axis=(0, 2)).sum()), c // layer.groups) * layer.taps
        bound = numerics.accumulator_bound(fan_in, w.reshape(o, -1).max(axis=1),
                                           numerics.max_abs_of_range(*rng),
                                           np.abs(layer.bias.astype(np.int64)))
        if not numerics.fits_accumulator(bound).all():
            c = int(np.argmax(bound))
            raise ProgramFormatError(
                f"{where}: layer {layer.name!r}: int32 accumulator may overflow on channel {c}: "
                f"K * max|w| * max|x| + |bias| = {bound[c]} must be < 2**31")
        ranges[layer.name] = ((max(rng[0], layer.lo), min(rng[1], layer.hi))
                              if _passes_through(layer) else (layer.lo, layer.hi))
        if layer.table is not None:     # the table's values, whatever it looks up
            ranges[layer.name] = (int(layer.table.min()), int(layer.table.max()))


def _check_input(graph: QGraph, config: AcceleratorConfig, where: str) -> None:
    """The input shape and the host-side unfold must be what `unfold.im2col_input` derives
    from the layers reading the input as the compiler had them (before any unfold) on
    ``config``."""
    readers, spec = graph.consumers(INPUT), tuple(graph.input_im2col)
    shape = map_shape(graph.input_shape)
    if not readers:
        raise ProgramFormatError(f"{where}: no layer reads the input")
    first = folded = readers[0]
    if spec:
        if len(readers) != 1 or graph.readers(INPUT) != 1:
            raise ProgramFormatError(f"{where}: input_im2col {list(spec)} needs one layer to read "
                                     f"the input, not {graph.readers(INPUT)}")
        kh, kw, sh, sw, ph, pw, *extra = spec
        c, o = shape[0], first.weight.shape[0]
        if first.kernel != (1, 1) or first.in_shape[0] != c * kh * kw:
            raise ProgramFormatError(
                f"{where}: layer {first.name!r} must be a 1x1 convolution over {c}x{kh}x{kw} = "
                f"{c * kh * kw} channels to read input_im2col {list(spec)} of a {_dims(shape)} "
                f"input, not a {_dims(first.kernel)} one over {first.in_shape[0]}")
        folded = first.replace(in_shape=shape, stride=(sh, sw), padding=(ph, pw),
                               pad_extra=tuple(extra) or (0, 0),
                               weight=first.weight.reshape(o, c, kh, kw))
        if min(folded.conv_shape[1:]) < 1:
            raise ProgramFormatError(f"{where}: input_im2col {list(spec)}: the {kh}x{kw} window "
                                     f"must fit the {_dims(shape)} input")
    else:
        for layer in readers:
            if not layer.reads(shape):
                raise ProgramFormatError(f"{where}: input_shape {list(graph.input_shape)} must "
                                         f"be layer {layer.name!r}'s input shape "
                                         f"{_dims(layer.in_shape)}")
        read = set().union(*(range(layer.channel_offset, layer.channel_offset + layer.in_shape[0])
                             for layer in readers))
        if read != set(range(shape[0])):
            raise ProgramFormatError(f"{where}: input_shape {list(graph.input_shape)} has channels "
                                     f"that no layer reads (they read {len(read)})")
    derived = im2col_input(graph.replace(layers=tuple(folded if layer is first else layer
                                                      for layer in graph.layers),
                                         input_im2col=()), config)
    if tuple(derived.input_im2col) != spec:
        raise ProgramFormatError(
            f"{where}: input_im2col must be {list(derived.input_im2col)} as the compiler derives "
            f"for a {_dims(shape)} input and layer {first.name!r} on this configuration, not "
            f"{list(spec)}")
    unfolded = derived.layer(first.name)
    if (unfolded.in_shape, unfolded.stride, unfolded.padding) != \
            (first.in_shape, first.stride, first.padding):
        raise ProgramFormatError(
            f"{where}: layer {first.name!r}: input shape {_dims(first.in_shape)} must be the "
            f"{_dims(unfolded.in_shape)} that input_im2col {list(spec)} unfolds from a "
            f"{_dims(shape)} input")


def _check_graph(graph: QGraph, config: AcceleratorConfig, where: str) -> None:
    """Every tensor is written before it is read, shapes agree from the input to the output,
    and the accumulators cannot overflow."""
    problem = graph.check_topology()
    if problem or graph.output == INPUT:
        raise ProgramFormatError(f"{where}: {problem or 'output must be a layer, not the input'}")
    for b in graph.layers:
        for name in b.inputs if b.op != "concat" else ():      # `_concat_shapes` checked those
            a = None if name == INPUT else graph.layer(name)
            if a is not None and not b.reads(a.out_shape):  # `lower_flatten` keeps map shapes
                sliced = f" from channel {b.channel_offset} on" if b.channel_offset else ""
                raise ProgramFormatError(f"{where}: layer {b.name!r}: input shape "
                                         f"{_dims(b.in_shape)}{sliced} must be layer {a.name!r}'s "
                                         f"output shape {_dims(a.out_shape)}")
    last = list(graph.layer(graph.output).out_shape)
    # The network's output as its last op left it: a C x H x W map, a C x L signal (a C x 1 x L
    # map of a network on signals) or, after a flatten or a linear layer, a vector.
    shapes = [last, [math.prod(last)]]
    if len(graph.input_shape) == 2 and last[1] == 1:
        shapes.insert(1, [last[0], last[2]])
    if list(graph.output_shape) not in shapes:
        raise _bad(where, "output_shape", f"{' or '.join(map(str, shapes))} (the last layer's "
                   "output)", list(graph.output_shape))
    _check_input(graph, config, where)
    _check_accumulators(graph, where)


def _concat_shapes(graph: QGraph, where: str) -> QGraph:
    """``graph`` with each concatenation's shapes set from its inputs, which must be written
    before it, share its height, width and scale."""
    shapes, layers = {INPUT: (map_shape(graph.input_shape), graph.input_scale)}, []
    for layer in graph.layers:
        if layer.op == "concat":
            missing = [n for n in layer.inputs if n not in shapes]
            if missing:
                raise ProgramFormatError(f"{where}: layer {layer.name!r} reads {missing[0]!r}, "
                                         "which no earlier layer writes")
            parts = [shapes[n] for n in layer.inputs]
            if len({shape[1:] for shape, _ in parts}) > 1 or \
                    any(scale != layer.out_scale for _, scale in parts):
                raise ProgramFormatError(
                    f"{where}: layer {layer.name!r}: the inputs of a concatenation must have "
                    f"its height, width and out_scale {layer.out_scale!r}, not "
                    f"{', '.join(f'{_dims(s)} at {c!r}' for s, c in parts)}")
            first = parts[0][0]
            layer = layer.replace(in_shape=first, out_shape=(sum(s[0] for s, _ in parts),)
                                  + tuple(first[1:]))
        shapes[layer.name] = (tuple(layer.out_shape), layer.out_scale)
        layers.append(layer)
    return graph.replace(layers=tuple(layers))


def _decode(payload: bytes, where: str):
    from .program import Program
    if len(payload) < 4:
        raise ProgramFormatError(f"{where}: payload must start with a 4-byte header length, not "
                                 f"be {len(payload)} bytes")
    (text_len,) = struct.unpack_from("<I", payload)
    if text_len > len(payload) - 4:
        raise ProgramFormatError(f"{where}: header length must be at most {len(payload) - 4} "
                                 f"bytes, not {text_len}")
    try:
        header = json.loads(payload[4:4 + text_len].decode("utf-8"), object_pairs_hook=_object)
    except (ValueError, RecursionError) as exc:    # UnicodeDecodeError, JSONDecodeError too
        raise ProgramFormatError(f"{where}: header must be UTF-8 JSON ({exc})") from None
    blob = payload[4 + text_len:]
    header = _fields(header, "header", where, _HEADER_FIELDS, _OPTIONAL)
    config = header["config"]
    if not isinstance(config, dict):
        raise _bad(where, "config", "a JSON object", config)
    try:
        config = AcceleratorConfig.from_dict(config)   # absent parameters take their defaults
    except StriateError as exc:
        raise ProgramFormatError(f"{where}: config: {exc}") from None
    input_shape = _ints(header["input_shape"], "input_shape", where, None, 1)
    if len(input_shape) not in (1, 2, 3):
        raise _bad(where, "input_shape", "[C, H, W], [C, L] or [F]", list(input_shape))
    input_scale = _scale(header["input_scale"], "input_scale", where)
    output_shape = _ints(header["output_shape"], "output_shape", where, None, 1)
    im2col = header["input_im2col"]
    if im2col != [] and not (isinstance(im2col, list) and len(im2col) in (6, 8)
                             and all(_is_int(v) for v in im2col)
                             and min(im2col[:4]) >= 1 and min(im2col[4:6]) >= 0
                             and all(v in (0, 1) for v in im2col[6:]) and im2col[6:] != [0, 0]):
        raise _bad(where, "input_im2col", "[] or 6 integers [kh, kw, sh, sw, ph, pw] (kernel "
                   "and stride >= 1, padding >= 0), or 8 with the extra bottom and right padding "
                   "(0 or 1, not both 0)", im2col)
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):       # its values are JSON values: json.loads made them
        raise _bad(where, "metadata", "a JSON object", metadata)
    entries = header["layers"]
    if not isinstance(entries, list) or not entries:
        raise _bad(where, "layers", "a non-empty list", entries)
    decoded, pos = [], 0
    for index, entry in enumerate(entries):
        layer, desc, pos = _decode_layer(entry, index, blob, pos, where)
        decoded.append((layer, desc))
    if pos != len(blob):
        raise ProgramFormatError(f"{where}: the array blob must end after the last array at byte "
                                 f"{pos}, not run to byte {len(blob)}")
    output = _str(header["output"], "output", where)
    graph = QGraph(layers=tuple(layer for layer, _ in decoded), input_shape=input_shape,
                   input_scale=input_scale, output_shape=output_shape,
                   input_im2col=tuple(im2col), output=output)
    graph = _concat_shapes(graph, where)
    _check_graph(graph, config, where)
    timing, streaming = _memory(header.get("memory"), config, where)
    # plans memory: `MappingError` if it fails
    program = Program(graph, config, metadata, timing=timing, streaming=streaming)
    for (layer, stored), derived in zip(decoded, program.layer_descriptors):
        if derived is None:         # a concatenation (stored without a descriptor too)
            continue
        changed = [f.name for f in dataclasses.fields(derived)
                   if getattr(stored, f.name) != getattr(derived, f.name)]
        if changed:
            def values(desc):
                return ", ".join(str(getattr(desc, name)) for name in changed)
            raise ProgramFormatError(
                f"{where}: layer {layer.name!r}: descriptor field{'s' * (len(changed) > 1)} "
                f"{', '.join(changed)} must be {values(derived)} as the mapper places the layer, "
                f"not {values(stored)}")
    return program


def load_program(path):
    """Load a program file; raise `ProgramFormatError` for anything but a valid, intact one that
    the compiler could have produced (see docs/program-format.md for what is checked)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ProgramFormatError(f"program file path must be a file name, not {path!r}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProgramFormatError(f"cannot read program file {str(path)!r}: {exc}") from None
    where = f"program file {str(path)!r}"
    if len(data) < _HEADER.size or data[:8] != MAGIC:
        raise ProgramFormatError(f"{where} is not a striate program (bad magic)")
    _, version, reserved, length, digest = _HEADER.unpack_from(data)
    if version in OLD_VERSIONS:
        raise ProgramFormatError(
            f"{where} is format version {version} ({OLD_VERSIONS[version]}), which this striate "
            f"no longer runs; compile the model again to write format version {FORMAT_VERSION}")
    if version != FORMAT_VERSION:
        raise ProgramFormatError(f"{where}: format version must be {FORMAT_VERSION}, not {version}")
    if reserved != 0:
        raise ProgramFormatError(f"{where}: reserved header field must be 0, not {reserved}")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise ProgramFormatError(f"{where} is truncated or padded: payload must be {length} "
                                 f"bytes, not {len(payload)}")
    if hashlib.sha256(payload).digest() != digest:
        raise ProgramFormatError(f"{where} is corrupted: checksum mismatch")
    try:
        return _decode(payload, where)
    except ProgramFormatError:
        raise
    except StriateError as exc:         # the mapper refused the program for its configuration
        raise ProgramFormatError(f"{where}: {exc}") from None
    except (LookupError, TypeError, ValueError, ArithmeticError, AttributeError, RecursionError,
            struct.error) as exc:
        # Every field is checked before use above; this keeps the promise should a check miss.
        raise ProgramFormatError(f"{where} is malformed: {type(exc).__name__}: {exc}") from None
