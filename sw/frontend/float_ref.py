"""Float64 NumPy reference executor of a traced float graph (calibration and pass checks)."""

from __future__ import annotations

import numpy as np

from ..ir.graph import INPUT, map_shape
from ..ir import tables
from ..ir.kernels import conv2d, max_pool, sum_pool


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """Channel parameters shaped to broadcast over ``N x C x ...`` arrays of ``ndim`` axes."""
    return values.reshape(1, -1, *[1] * (ndim - 2))


def run_node(node, *inputs: np.ndarray) -> np.ndarray:
    """Run one node on its float64 inputs (in ``node.inputs`` order)."""
    x = inputs[0]
    n = x.shape[0]
    p, a = node.params, node.attrs
    if node.kind in ("conv", "maxpool", "avgpool"):        # on maps; signals are C x 1 x L
        x = x.reshape(n, *map_shape(node.in_shape))
        return _on_map(node, x).reshape(n, *node.out_shape)
    if node.kind == "bn":
        scale = p["gamma"] / np.sqrt(p["var"] + a["eps"])
        return (x - _per_channel(p["mean"], x.ndim)) * _per_channel(scale, x.ndim) \
            + _per_channel(p["beta"], x.ndim)
    if node.kind == "relu":
        return np.maximum(x, 0.0)
    if node.kind == "relu6":
        return np.clip(x, 0.0, 6.0)
    if node.kind == "upsample":
        fh, fw = a["factor"]
        x = x.reshape(n, *map_shape(node.in_shape)).repeat(fh, axis=2).repeat(fw, axis=3)
        return x.reshape(n, *node.out_shape)
    if node.kind == "table":
        return tables.evaluate(a["function"], a["options"], x)
    if node.kind == "pad":
        top, bottom, left, right = a["pads"]
        x = x.reshape(n, *map_shape(node.in_shape))
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) \
            .reshape(n, *node.out_shape)
    if node.kind == "flatten":
        return x.reshape(n, -1)
    if node.kind == "linear":
        return x @ p["weight"].T + p["bias"][None, :]
    if node.kind == "add":
        return x + inputs[1]
    if node.kind == "concat":
        return np.concatenate(inputs, axis=1)
    raise ValueError(f"unknown float node kind {node.kind!r}")


def _on_map(node, x: np.ndarray) -> np.ndarray:
    p, a = node.params, node.attrs
    if node.kind == "conv":
        return conv2d(x, p["weight"], a["stride"], a["padding"], a.get("pad_extra", (0, 0))) \
            + p["bias"][None, :, None, None]
    if node.kind == "maxpool":        # ceil_mode windows read -inf past the map too
        eh, ew = a.get("extra", (0, 0))
        x = np.pad(x, ((0, 0), (0, 0), (0, eh), (0, ew)), constant_values=-np.inf)
        return max_pool(x, a["kernel"], a["stride"], a["padding"], -np.inf)
    kh, kw = a["kernel"]
    return sum_pool(x, a["kernel"], a["stride"], a["padding"]) / (kh * kw)


def run_float(nodes, x, return_all: bool = False):
    """Run float64 ``N x input_shape`` input through ``nodes`` (a traced DAG whose last node is
    the output); return the output, or every node's output in node order."""
    tensors = {INPUT: np.asarray(x, dtype=np.float64)}
    for node in nodes:
        tensors[node.name] = run_node(node, *(tensors[name] for name in node.inputs))
    if return_all:
        return [tensors[node.name] for node in nodes]
    return tensors[nodes[-1].name] if nodes else tensors[INPUT]
