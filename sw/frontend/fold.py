"""Float passes on the traced `FloatNode` chain, run before quantization: each leaves the float
reference (`float_ref`) unchanged within float64 rounding; tests check it."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError


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
