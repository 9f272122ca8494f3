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


def fold_padding(nodes: list) -> list:
    """Fold each zero padding that is even on both sides of an axis into the convolution or
    average pooling (which pads with zeros and divides by the whole window) that alone reads
    it, and one with one more row or column at the bottom or right (Keras' 'same' padding of
    an odd total, as on stride-2 layers) into the convolution (``pad_extra``); any other
    padding stays a node of its own (float pass)."""
    readers = {}
    for node in nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node)
    folded, out = {}, []
    last = nodes[-1].name if nodes else None
    for node in nodes:
        if node.kind == "pad" and node.name != last and len(readers.get(node.name, [])) == 1:
            top, bottom, left, right = node.attrs["pads"]
            reader = readers[node.name][0]
            extra = (bottom - top, right - left)
            symmetric = extra == (0, 0) and reader.kind in ("conv", "avgpool")
            if symmetric or (reader.kind == "conv" and set(extra) <= {0, 1}
                             and reader.attrs.get("pad_extra", (0, 0)) == (0, 0)):
                ph, pw = (p + q for p, q in zip(reader.attrs["padding"], (top, left)))
                kh, kw = reader.attrs["kernel"] if reader.kind == "avgpool" else \
                    reader.params["weight"].shape[2:]
                if reader.kind == "conv" or (2 * ph <= kh and 2 * pw <= kw):
                    folded[reader.name] = (node, (ph, pw), extra)
                    continue
        if node.name in folded:
            pad, padding, extra = folded[node.name]
            attrs = {**node.attrs, "padding": padding}
            if extra != (0, 0):
                attrs["pad_extra"] = extra
            node = node.replace(in_shape=pad.in_shape, inputs=pad.inputs, attrs=attrs,
                                sources=pad.sources + node.sources)
        out.append(node)
    return out
