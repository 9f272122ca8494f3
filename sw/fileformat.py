"""The program file format (``.stp``), version 1.

Layout: 8-byte magic ``b"STRIATE\\0"``, format version (uint16 LE), reserved uint16 (0), payload
length (uint64 LE), SHA-256 of the payload (32 bytes), then the payload: a uint32 LE length, a
UTF-8 JSON header and a binary blob of little-endian arrays the header indexes.

The header stores the config, the scales, the host-side input unfold (if any), and per layer its name, module paths, output scale,
its descriptor as 32-bit words and its arrays. Loading rebuilds every layer's geometry from its
descriptor, re-runs the mapper and checks it reproduces the stored descriptors, so a file either
loads as exactly the program that was saved or raises `ProgramFormatError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from .config import AcceleratorConfig
from .descriptor import LayerDescriptor
from .errors import ProgramFormatError, StriateError
from .graph import QGraph, QLayer
from .mapper import geometry

MAGIC = b"STRIATE\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHQ32s")
_ARRAYS = {"weight": "<i1", "bias": "<i4", "mult": "<i4", "shift": "<u1"}


def _encode(program) -> bytes:
    blob, layers = bytearray(), []
    for layer, desc in zip(program.layers, program.descriptors):
        arrays = {}
        for name, dtype in _ARRAYS.items():
            value = getattr(layer, name)
            if value is None:
                continue
            data = np.ascontiguousarray(value, dtype=dtype).tobytes()
            arrays[name] = {"dtype": dtype, "shape": list(value.shape), "offset": len(blob),
                            "nbytes": len(data)}
            blob += data
        layers.append({"name": layer.name, "sources": list(layer.sources),
                       "out_scale": layer.out_scale, "descriptor": desc.to_words(),
                       "arrays": arrays})
    g = program.graph
    header = {"config": program.config.to_dict(), "input_shape": list(g.input_shape),
              "input_scale": g.input_scale, "output_shape": list(g.output_shape),
              "input_im2col": list(g.input_im2col), "metadata": program.metadata,
              "layers": layers}
    text = json.dumps(header, sort_keys=True).encode()
    return struct.pack("<I", len(text)) + text + bytes(blob)


def save_program(program, path) -> None:
    """Write ``program`` to ``path`` atomically: a crash leaves the old file or none."""
    payload = _encode(program)
    data = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload),
                        hashlib.sha256(payload).digest()) + payload
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _array(blob: bytes, spec: dict) -> np.ndarray:
    dtype = np.dtype(spec["dtype"])
    count = int(np.prod(spec["shape"])) if spec["shape"] else 1
    start, nbytes = int(spec["offset"]), int(spec["nbytes"])
    if nbytes != count * dtype.itemsize or start < 0 or start + nbytes > len(blob):
        raise ProgramFormatError(f"array of {spec['shape']} {spec['dtype']} lies outside the file")
    return np.frombuffer(blob, dtype, count, start).reshape(spec["shape"])


def _decode_layer(entry: dict, blob: bytes) -> tuple[QLayer, LayerDescriptor]:
    desc = LayerDescriptor.from_words(entry["descriptor"])
    fields = geometry(desc)
    arrays = {name: _array(blob, spec) for name, spec in entry["arrays"].items()}
    if set(arrays) != set(_ARRAYS):
        raise ProgramFormatError(f"layer '{entry['name']}' must have arrays {sorted(_ARRAYS)}, "
                                 f"not {sorted(arrays)}")
    # The kernel lives only in the weights' shape; the rest QLayer.check compares itself.
    kernel = (desc.out_c, desc.in_c, desc.k_h, desc.k_w)
    if arrays["weight"].shape != kernel:
        raise ProgramFormatError(f"layer '{entry['name']}': weight must have shape {kernel} as "
                                 f"its descriptor says, not {arrays['weight'].shape}")
    layer = QLayer(name=str(entry["name"]), sources=tuple(entry["sources"]),
                   out_scale=float(entry["out_scale"]), **fields,
                   weight=arrays["weight"].astype(np.int8), bias=arrays["bias"].astype(np.int32),
                   mult=arrays["mult"].astype(np.int64), shift=arrays["shift"].astype(np.int64))
    layer.check()
    return layer, desc


def load_program(path):
    """Load a program file; raise `ProgramFormatError` for anything but a valid, intact one."""
    from .program import Program
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProgramFormatError(f"cannot read program file {str(path)!r}: {exc}") from None
    where = f"program file {str(path)!r}"
    if len(data) < _HEADER.size or data[:8] != MAGIC:
        raise ProgramFormatError(f"{where} is not a striate program (bad magic)")
    _, version, reserved, length, digest = _HEADER.unpack_from(data)
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
        (text_len,) = struct.unpack_from("<I", payload)
        header = json.loads(payload[4:4 + text_len])
        blob = payload[4 + text_len:]
        config = AcceleratorConfig.from_dict(header["config"])
        decoded = [_decode_layer(entry, blob) for entry in header["layers"]]
        graph = QGraph(layers=tuple(layer for layer, _ in decoded),
                       input_shape=tuple(header["input_shape"]),
                       input_scale=float(header["input_scale"]),
                       output_shape=tuple(header["output_shape"]),
                       input_im2col=tuple(int(v) for v in header["input_im2col"]))
        program = Program(graph, config, header.get("metadata", {}))
    except ProgramFormatError:
        raise
    except (StriateError, KeyError, TypeError, ValueError, struct.error) as exc:
        raise ProgramFormatError(f"{where} is malformed: {exc}") from None
    if program.descriptors != tuple(desc for _, desc in decoded):
        raise ProgramFormatError(f"{where}: stored descriptors disagree with the memory plan")
    return program
