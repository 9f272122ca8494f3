"""Float64 NumPy reference executor of a traced float graph (calibration and pass checks)."""

from __future__ import annotations

import numpy as np

from ..ir.kernels import conv2d, max_pool, sum_pool


def run_node(node, x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    p, a = node.params, node.attrs
    if node.kind == "conv":
        return conv2d(x, p["weight"], a["stride"], a["padding"]) + p["bias"][None, :, None, None]
    if node.kind == "bn":
        scale = p["gamma"] / np.sqrt(p["var"] + a["eps"])
        return (x - p["mean"][None, :, None, None]) * scale[None, :, None, None] \
            + p["beta"][None, :, None, None]
    if node.kind == "relu":
        return np.maximum(x, 0.0)
    if node.kind == "relu6":
        return np.clip(x, 0.0, 6.0)
    if node.kind == "maxpool":
        return max_pool(x, a["kernel"], a["stride"], a["padding"], -np.inf)
    if node.kind == "avgpool":
        kh, kw = a["kernel"]
        return sum_pool(x, a["kernel"], a["stride"], a["padding"]) / (kh * kw)
    if node.kind == "flatten":
        return x.reshape(n, -1)
    if node.kind == "linear":
        return x @ p["weight"].T + p["bias"][None, :]
    raise ValueError(f"unknown float node kind {node.kind!r}")


def run_float(nodes, x, return_all: bool = False):
    """Run float64 ``N x C x H x W`` input through ``nodes``; optionally every node's output."""
    x = np.asarray(x, dtype=np.float64)
    outs = []
    for node in nodes:
        x = run_node(node, x)
        outs.append(x)
    return outs if return_all else x
