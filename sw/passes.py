"""Compiler passes: pure functions from graph to graph.

Float passes (on the traced `FloatNode` chain) run before quantization; integer passes (on a
`QGraph`) after. Every integer pass leaves the golden model's output bit for bit unchanged; every
float pass leaves the float reference within float64 rounding. Tests check both.
"""

from __future__ import annotations

import numpy as np

from .errors import UnsupportedLayerError
from .graph import QGraph


def fold_batchnorm(nodes: list) -> list:
    """Fold each BatchNorm2d into the Conv2d before it (float pass)."""
    out = []
    for node in nodes:
        if node.kind != "bn":
            out.append(node)
            continue
        prev = out[-1] if out else None
        if prev is None or prev.kind != "conv":
            raise UnsupportedLayerError(
                f"BatchNorm2d at '{node.name}' is not supported: it must directly follow a Conv2d "
                f"to be folded, not {'the input' if prev is None else repr(prev.kind)}")
        p = node.params
        scale = p["gamma"] / np.sqrt(p["var"] + node.attrs["eps"])
        weight = prev.params["weight"] * scale[:, None, None, None]
        bias = (prev.params["bias"] - p["mean"]) * scale + p["beta"]
        out[-1] = prev.replace(params={"weight": weight, "bias": bias},
                               sources=prev.sources + node.sources)
    return out


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
    """Drop flatten layers: every layer reshapes its input to ``in_shape`` in PyTorch's order."""
    layers = tuple(layer for layer in graph.layers if layer.op != "flatten")
    if not layers:
        return graph
    return graph.replace(layers=layers)


INTEGER_PASSES = (fuse_activation, fuse_pool, lower_flatten)
