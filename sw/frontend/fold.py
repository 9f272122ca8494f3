"""Float passes on the traced `FloatNode` graph, run before quantization: each leaves the float
reference (`float_ref`) unchanged within float64 rounding; tests check it."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError


def fold_batchnorm(nodes: list) -> list:
    """Fold each BatchNorm into the Conv2d (BatchNorm2d), Conv1d or Linear (BatchNorm1d) that
    writes its input, when nothing else reads that layer's output (float pass)."""
    out, index, names = [], {}, {}
    readers = {}
    for node in nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    for node in nodes:
        node = node.replace(inputs=tuple(names.get(t, t) for t in node.inputs))
        if node.kind != "bn":
            index[node.name] = len(out)
            out.append(node)
            continue
        source = node.inputs[0]
        prev = out[index[source]] if source in index else None
        kind = "BatchNorm2d" if len(node.in_shape) == 3 else "BatchNorm1d"
        if prev is None or prev.kind not in ("conv", "linear") or readers[source] != 1:
            what = ("the input" if prev is None else repr(prev.kind) if prev.kind not in
                    ("conv", "linear") else f"'{prev.name}', which other layers read too")
            follows = {3: "Conv2d", 2: "Conv1d", 1: "Linear"}[len(node.in_shape)]
            raise UnsupportedLayerError(
                f"{kind} at '{node.name}' is not supported: it must directly follow a "
                f"{follows} to be folded, not {what}")
        p = node.params
        scale = p["gamma"] / np.sqrt(p["var"] + node.attrs["eps"])
        weight = prev.params["weight"] * scale.reshape(-1, *[1] * (prev.params["weight"].ndim - 1))
        bias = (prev.params["bias"] - p["mean"]) * scale + p["beta"]
        out[index[source]] = prev.replace(params={"weight": weight, "bias": bias},
                                          sources=prev.sources + node.sources)
        names[node.name] = prev.name
    return out
