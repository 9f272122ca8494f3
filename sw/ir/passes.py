"""Integer passes: pure functions from `QGraph` to `QGraph`, run after quantization.

Every integer pass leaves the golden model's output bit for bit unchanged; tests check it.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError
from .graph import QGraph


def _is_clamp(layer) -> bool:
    return layer.op == "pool" and layer.pool == "none"


def _merge_chain(graph: QGraph, merge) -> QGraph:
    """Fold layer pairs left to right: ``merge(a, b)`` returns the fused layer or None."""
    layers = []
    for layer in graph.layers:
        fused = merge(layers[-1], layer) if layers else None
        if fused is None:
            layers.append(layer)
        else:
            layers[-1] = fused
    return graph.replace(layers=tuple(layers))


def fuse_activation(graph: QGraph) -> QGraph:
    """Merge a clamp-only layer (ReLU, ReLU6) into the layer before it.

    Exact because clamps compose and commute with max pooling; not done after average pooling,
    whose rounding does not commute with a clamp.
    """
    def merge(a, b):
        if not _is_clamp(b) or a.op == "flatten" or a.pool == "avg":
            return None
        lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
        if lo > hi:
            return None
        return a.replace(lo=lo, hi=hi, out_scale=b.out_scale, name=a.name,
                         sources=a.sources + b.sources)
    return _merge_chain(graph, merge)


def fuse_pool(graph: QGraph) -> QGraph:
    """Merge a max or average pooling layer into the convolution before it.

    Max pooling commutes with clamps, so the two clamps merge into their intersection. Average
    pooling is merged only when its own clamp admits every value the convolution can produce (so
    it is a no-op); the fused layer clamps with the convolution's range.
    """
    def merge(a, b):
        if a.op != "conv" or a.pool != "none" or b.op != "pool" or b.pool == "none":
            return None
        lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
        if b.pool == "avg" and (lo, hi) != (a.lo, a.hi) or lo > hi:
            return None
        return a.replace(pool=b.pool, pool_kernel=b.pool_kernel, pool_stride=b.pool_stride,
                         pool_padding=b.pool_padding, pool_mult=b.pool_mult,
                         pool_shift=b.pool_shift, out_shape=b.out_shape, out_scale=b.out_scale,
                         lo=lo, hi=hi, sources=a.sources + b.sources)
    return _merge_chain(graph, merge)


def lower_flatten(graph: QGraph) -> QGraph:
    """Remove flatten layers: a linear layer on a flattened ``C x H x W`` map becomes a
    convolution with an ``H x W`` kernel and no padding over the map itself (the same sums in
    PyTorch's flatten order); clamp layers in between keep the map's shape (they are elementwise).
    """
    layers, pending = [], None
    for layer in graph.layers:
        if layer.op == "flatten":
            pending = pending or layer.in_shape
            continue
        if pending is not None:
            if _is_clamp(layer):
                layer = layer.replace(in_shape=pending, out_shape=pending)
            elif layer.op == "conv" and layer.kernel == (1, 1) and \
                    layer.in_shape == (int(np.prod(pending)), 1, 1):
                o = layer.weight.shape[0]
                layer = layer.replace(in_shape=pending, weight=layer.weight.reshape(o, *pending))
                pending = None      # the layers after it see a C x 1 x 1 map again
            else:
                raise UnsupportedLayerError(
                    f"layer '{layer.name}' is not supported after a flatten: only clamps and "
                    "linear layers may follow one")
        layers.append(layer)
    return graph.replace(layers=tuple(layers))


IDENTITY_MULT, IDENTITY_SHIFT = 1 << 30, 30   # (x * 2**30 + 2**29) >> 30 == x for integers


def lower_pool_layers(graph: QGraph) -> QGraph:
    """Turn each remaining pooling or clamp layer into a 1x1 convolution with identity weights,
    zero bias and a unit multiplier, so every layer runs on the convolution datapath."""
    layers = []
    for layer in graph.layers:
        if layer.op == "pool":
            c = layer.in_shape[0]
            layer = layer.replace(
                op="conv", weight=np.eye(c, dtype=np.int8).reshape(c, c, 1, 1),
                bias=np.zeros(c, np.int32), mult=np.full(c, IDENTITY_MULT, np.int64),
                shift=np.full(c, IDENTITY_SHIFT, np.int64), stride=(1, 1), padding=(0, 0))
        layers.append(layer)
    return graph.replace(layers=tuple(layers))


INTEGER_PASSES = (fuse_activation, fuse_pool, lower_flatten, lower_pool_layers)
