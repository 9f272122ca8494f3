"""Compiler passes: pure functions from graph to graph.

Float passes (on the traced `FloatNode` chain) run before quantization; integer passes (on a
`QGraph`) after. Every integer pass leaves the golden model's output bit for bit unchanged; every
float pass leaves the float reference within float64 rounding. Tests check both.
"""

from __future__ import annotations

import numpy as np

from .errors import UnsupportedLayerError
from .config import AcceleratorConfig
from .graph import QGraph
from .mapper import act_bytes


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


def im2col_input(graph: QGraph, config: AcceleratorConfig) -> QGraph:
    """Unfold the first convolution's windows on the host when its input has fewer channels
    than the PE array has input lanes and the unfolded map fits an activation bank.

    The first layer becomes a 1x1 convolution over ``C*KH*KW x OH x OW`` (channel order
    ``c, ky, kx``) and the graph records ``input_im2col`` so the host unfolds the input image
    the same way (`golden.im2col`). With one input channel and 4 lanes a 5x5 layer then needs
    7 cycles per pixel instead of 25.
    """
    if not graph.layers or graph.input_im2col:
        return graph
    first = graph.layers[0]
    c = first.in_shape[0]
    if first.op != "conv" or c >= config.pe_in or first.kernel == (1, 1):
        return graph
    o, _, kh, kw = first.weight.shape
    _, oh, ow = first.conv_shape
    if act_bytes((c * kh * kw, oh, ow), config) > config.act_bank_bytes:
        return graph
    unfolded = first.replace(in_shape=(c * kh * kw, oh, ow), stride=(1, 1), padding=(0, 0),
                             weight=first.weight.reshape(o, c * kh * kw, 1, 1))
    return graph.replace(layers=(unfolded,) + graph.layers[1:],
                         input_im2col=(kh, kw) + tuple(first.stride) + tuple(first.padding))
