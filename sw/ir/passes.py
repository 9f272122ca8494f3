"""Integer passes: pure functions from `QGraph` to `QGraph`, run after quantization.

Every integer pass leaves the golden model's output bit for bit unchanged; tests check it.
Fusions merge a layer into the one that writes its input only when that tensor has no other
reader, so a tensor that fans out is computed once, as it is.
"""

from __future__ import annotations

import numpy as np

from . import numerics, tables
from ..errors import UnsupportedLayerError
from .graph import QGraph


def _is_clamp(layer) -> bool:
    return _is_elementwise(layer) and layer.table is None


def _is_elementwise(layer) -> bool:
    """A clamp or a function by table: a layer that maps each value on its own."""
    return layer.op == "pool" and layer.pool == "none" and layer.upsample == (1, 1)


def _clamped(table, lo: int, hi: int):
    return np.clip(table, lo, hi).astype(np.int8)


def _renamed(layer, names: dict):
    """``layer`` reading ``names.get(t, t)`` for each of its input tensors ``t``."""
    inputs = tuple(names.get(t, t) for t in layer.inputs)
    return layer if inputs == layer.inputs else layer.replace(inputs=inputs)


def _merge_pairs(graph: QGraph, merge) -> QGraph:
    """Fuse each layer ``b`` into the layer ``a`` that writes its only input when ``b`` is that
    tensor's only reader: ``merge(a, b)`` returns the fused layer (which keeps ``a``'s name and
    place) or None. Readers of ``b`` then read the fused layer."""
    layers, index, names = [], {}, {}
    for layer in graph.layers:
        b = _renamed(layer, names)
        a = layers[index[b.inputs[0]]] if len(b.inputs) == 1 and b.inputs[0] in index else None
        fused = merge(a, b) if a is not None and graph.readers(layer.inputs[0]) == 1 else None
        if fused is None:
            index[b.name] = len(layers)
            layers.append(b)
        else:
            layers[index[a.name]] = fused
            names[b.name] = a.name
    return graph.replace(layers=tuple(layers), output=names.get(graph.output, graph.output))


def fuse_activation(graph: QGraph) -> QGraph:
    """Merge a clamp-only layer (ReLU, ReLU6) into the layer before it (a convolution, a
    pooling layer or an add).

    Exact because clamps compose and commute with max pooling; not done after average pooling,
    whose rounding does not commute with a clamp. After a layer with a table the clamp applies
    to the table's values instead (the table comes last).
    """
    def merge(a, b):
        if not _is_clamp(b) or a.op not in ("conv", "pool", "add"):
            return None
        if a.table is not None:
            return a.replace(table=_clamped(a.table, b.lo, b.hi), out_scale=b.out_scale,
                             sources=a.sources + b.sources)
        if a.pool == "avg":
            return None
        lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
        if lo > hi:
            return None
        return a.replace(lo=lo, hi=hi, out_scale=b.out_scale, sources=a.sources + b.sources)
    return _merge_pairs(graph, merge)


def fuse_table(graph: QGraph) -> QGraph:
    """Merge a function by table into the convolution or pooling layer before it, which then
    looks its values up after its own pooling, as the table layer did after it. The table
    layer's clamp (of its input) is folded into the table."""
    def merge(a, b):
        if b.table is None or b.pool != "none" or b.op != "pool" or a.op not in ("conv", "pool") \
                or a.table is not None:
            return None
        keep = np.arange(numerics.INT8_MIN, numerics.INT8_MAX + 1).clip(b.lo, b.hi)
        return a.replace(table=b.table[keep - numerics.INT8_MIN], out_scale=b.out_scale,
                         sources=a.sources + b.sources)
    return _merge_pairs(graph, merge)


def fuse_pool(graph: QGraph) -> QGraph:
    """Merge a max or average pooling layer into the convolution before it.

    Max pooling commutes with clamps, so the two clamps merge into their intersection. Average
    pooling is merged only when its own clamp admits every value the convolution can produce (so
    it is a no-op); the fused layer clamps with the convolution's range. After a table, which
    the fused layer applies after pooling, only max pooling merges and only when the table
    never decreases (then the two commute); the pool's clamp then applies to the table.
    """
    def merge(a, b):
        if a.op != "conv" or a.pool != "none" or b.op != "pool" or b.pool == "none":
            return None
        if a.table is not None:
            if b.pool != "max" or not tables.monotonic(a.table):
                return None
            return a.replace(pool=b.pool, pool_kernel=b.pool_kernel, pool_stride=b.pool_stride,
                             pool_padding=b.pool_padding, out_shape=b.out_shape,
                             table=_clamped(a.table, b.lo, b.hi), out_scale=b.out_scale,
                             sources=a.sources + b.sources)
        lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
        if b.pool == "avg" and (lo, hi) != (a.lo, a.hi) or lo > hi:
            return None
        return a.replace(pool=b.pool, pool_kernel=b.pool_kernel, pool_stride=b.pool_stride,
                         pool_padding=b.pool_padding, pool_mult=b.pool_mult,
                         pool_shift=b.pool_shift, out_shape=b.out_shape, out_scale=b.out_scale,
                         lo=lo, hi=hi, sources=a.sources + b.sources)
    return _merge_pairs(graph, merge)


def lower_flatten(graph: QGraph) -> QGraph:
    """Remove flatten layers: a linear layer on a flattened ``C x H x W`` map becomes a
    convolution with an ``H x W`` kernel and no padding over the map itself (the same sums in
    PyTorch's flatten order); clamp layers in between keep the map's shape (they are elementwise).
    A flattened map may feed only those; the graph's output may be one.
    """
    layers, names, maps = [], {}, {}    # maps: tensor -> the C x H x W map it flattens
    for layer in graph.layers:
        flat = [t for t in layer.inputs if t in maps]
        layer = _renamed(layer, names)
        if layer.op == "flatten":
            maps[layer.name] = maps[flat[0]] if flat else layer.in_shape
            names[layer.name] = layer.inputs[0]
            continue
        if flat:
            shape = maps[flat[0]]
            if _is_elementwise(layer):
                layer = layer.replace(in_shape=shape, out_shape=shape)
                maps[layer.name] = shape
            elif layer.op == "conv" and layer.kernel == (1, 1) and \
                    layer.in_shape == (int(np.prod(shape)), 1, 1):
                o = layer.weight.shape[0]
                layer = layer.replace(in_shape=shape, weight=layer.weight.reshape(o, *shape))
            else:
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' is not supported after a flatten: only clamps and "
                    "linear layers may follow one")
        layers.append(layer)
    return graph.replace(layers=tuple(layers), output=names.get(graph.output, graph.output))


IDENTITY_MULT, IDENTITY_SHIFT = 1 << 30, 30   # (x * 2**30 + 2**29) >> 30 == x for integers


def copy_conv(layer, weight: np.ndarray, padding=(0, 0), mult=IDENTITY_MULT,
              shift=IDENTITY_SHIFT):
    """``layer`` as a stride-1 convolution with 0/1 ``weight`` (each output channel one input
    value or zero: `QLayer.is_copy`), zero bias and multipliers ``mult`` / ``shift`` (default:
    unit), keeping its clamp and pooling. Every copy the compiler adds is one."""
    o = weight.shape[0]
    return layer.replace(
        op="conv", weight=np.asarray(weight, np.int8), bias=np.zeros(o, np.int32),
        mult=np.full(o, mult, np.int64), shift=np.full(o, shift, np.int64), stride=(1, 1),
        padding=tuple(padding))


def identity_conv(layer, channels: int, mult=IDENTITY_MULT, shift=IDENTITY_SHIFT):
    """``layer`` as a 1x1 convolution of ``channels`` channels with identity weights, zero bias
    and multipliers ``mult`` / ``shift`` (default: unit), keeping its clamp and pooling."""
    eye = np.eye(channels, dtype=np.int8).reshape(channels, channels, 1, 1)
    return copy_conv(layer, eye, mult=mult, shift=shift)


def lower_pool_layers(graph: QGraph) -> QGraph:
    """Turn each remaining pooling or clamp layer into a 1x1 convolution with identity weights,
    zero bias and a unit multiplier, so it runs on the convolution datapath; an upsampling one
    into that depthwise convolution (each channel copies its own), which the depthwise datapath
    runs (`striate.sw.mapping.depthwise`)."""
    def lowered(layer):
        if layer.op != "pool":
            return layer
        conv = identity_conv(layer, layer.in_shape[0])
        return conv.replace(groups=layer.in_shape[0]) if layer.upsample != (1, 1) else conv
    return graph.replace(layers=tuple(lowered(layer) for layer in graph.layers))


INTEGER_PASSES = (fuse_activation, fuse_table, fuse_pool, lower_flatten, lower_pool_layers)
