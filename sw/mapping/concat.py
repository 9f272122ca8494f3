"""The configuration-dependent pass that places concatenations in the activation memory.

A concatenation has no descriptor: its inputs are *views* of its output, each written by its
producer straight into a slice of channel groups (`mapper.plan_memory` places them), so joining
them costs no cycles and no copy. That needs, for every input but the last, a whole number of
``pe_in``-channel words per pixel, and each tensor in at most one concatenation slot. This pass
rewrites the graph so that both hold, keeping every value the golden model computes for the
original layers:

* An input whose channels are not a multiple of ``pe_in`` (not the last one) takes zero channels
  up to the next multiple: its producer's, when an ungrouped convolution that only this
  concatenation reads (zero weights and bias give 0 under every clamp and pooling), otherwise
  a copy's. The concatenation then holds those zero channels between its parts ("holes").
* An input that is the network input, or already a view in another slot, is copied into its
  slot by a 1x1 copy convolution (``<concat>.slot<i>``).
* A convolution reading a tensor with holes gets zero weight columns at the holes; any other
  reader (an add, a grouped convolution, the network output) reads a copy without holes (``<tensor>.dense``).

Copies are 1x1 convolutions with 0/1 weights and a unit multiplier (`QLayer.is_copy`).
"""

from __future__ import annotations

import numpy as np

from ..config import AcceleratorConfig
from ..ir import numerics
from ..ir.graph import INPUT, QGraph, QLayer, map_shape
from ..ir.passes import IDENTITY_MULT, IDENTITY_SHIFT, copy_conv
from .layout import groups


def _copy(name: str, source: str, in_shape: tuple, picks, channels: int, like: QLayer) -> QLayer:
    """A 1x1 copy writing input channel ``picks[i]`` to output channel ``i`` and zeros to the
    rest of its ``channels``, at ``like``'s scale."""
    weight = np.zeros((channels, in_shape[0], 1, 1), np.int8)
    weight[np.arange(len(picks)), np.asarray(picks, int), 0, 0] = 1
    return copy_conv(QLayer(name=name, op="pool", in_shape=tuple(in_shape),
                            out_shape=(channels,) + tuple(in_shape[1:]),
                            out_scale=like.out_scale, sources=like.sources, inputs=(source,)),
                     weight)


def _pad_outputs(layer: QLayer, channels: int) -> QLayer:
    """``layer`` (a convolution) with zero output channels up to ``channels``."""
    o = layer.weight.shape[0]
    extra = channels - o

    def grow(a, fill):
        return np.concatenate([a, np.full((extra,) + a.shape[1:], fill, a.dtype)])
    return layer.replace(out_shape=(channels,) + tuple(layer.out_shape[1:]),
                         weight=grow(layer.weight, 0), bias=grow(layer.bias, 0),
                         mult=grow(layer.mult, IDENTITY_MULT),
                         shift=grow(layer.shift, IDENTITY_SHIFT))


def place_concats(graph: QGraph, config: AcceleratorConfig) -> QGraph:
    """``graph`` with every concatenation's inputs made views of its output on ``config``
    (see the module docstring); a graph without concatenations is returned as it is."""
    if not any(layer.op == "concat" for layer in graph.layers):
        return graph
    lanes = config.pe_in
    holes = {}              # tensor -> positions of its logical channels among its physical ones
    slotted = set()         # tensors that are already a view in a concatenation slot
    dense = {}              # tensor with holes -> name of its copy without them
    out = []

    def index(name):
        return next(i for i, layer in enumerate(out) if layer.name == name)

    def without_holes(name, like):
        if name not in dense:
            copy = _copy(f"{name}.dense", name, out[index(name)].out_shape, holes[name],
                         len(holes[name]), like)
            out.append(copy)
            dense[name] = copy.name
        return dense[name]

    for layer in graph.layers:
        if layer.op == "conv" and layer.inputs[0] in holes and layer.groups == 1:
            picks = holes[layer.inputs[0]]
            o, _, kh, kw = layer.weight.shape
            phys = out[index(layer.inputs[0])].out_shape
            weight = np.zeros((o, phys[0], kh, kw), np.int8)
            weight[:, picks] = layer.weight
            layer = layer.replace(in_shape=tuple(phys), weight=weight)
        elif layer.op in ("add", "conv"):      # a grouped convolution reads it without holes
            layer = layer.replace(inputs=tuple(without_holes(n, out[index(n)]) if n in holes
                                               else n for n in layer.inputs))
        elif layer.op == "concat":
            layer = _place(layer, out, holes, slotted, graph, lanes)
        out.append(layer)
    output = graph.output
    if output in holes:
        output = without_holes(output, out[index(output)])
    return graph.replace(layers=tuple(out), output=output)


def _place(concat: QLayer, out: list, holes: dict, slotted: set, graph: QGraph,
           lanes: int) -> QLayer:
    """``concat`` with inputs that can be views (appending copies to ``out`` and padding
    producers in it as needed); records its holes."""
    inputs, picks, offset = [], [], 0
    last = len(concat.inputs) - 1
    for i, name in enumerate(concat.inputs):
        at = next((k for k, layer in enumerate(out) if layer.name == name), None)
        phys = (map_shape(graph.input_shape) if at is None else out[at].out_shape)[0]
        logical = holes.get(name, np.arange(phys))
        need = phys if i == last else groups(phys, lanes) * lanes
        view = name != INPUT and name not in slotted
        if view and need != phys:
            producer = out[at]
            # zero channels must come out zero: not through a table that moves 0
            zero_kept = producer.table is None or producer.table[-numerics.INT8_MIN] == 0
            if producer.op == "conv" and producer.groups == 1 and graph.readers(name) == 1 \
                    and name not in holes and zero_kept:
                out[at] = _pad_outputs(producer, need)
            else:
                view = False
        if not view:
            src_shape = (phys,) + tuple(concat.out_shape[1:])
            copy = _copy(f"{concat.name}.slot{i}", name, src_shape, logical, need, concat)
            out.append(copy)
            name, logical = copy.name, np.arange(len(logical))
        slotted.add(name)
        inputs.append(name)
        picks.append(offset + np.asarray(logical))
        offset += need
    channels = np.concatenate(picks)
    if offset != len(channels):
        holes[concat.name] = channels
    first = out[next(k for k, layer in enumerate(out) if layer.name == inputs[0])].out_shape
    return concat.replace(inputs=tuple(inputs), in_shape=tuple(first),
                          out_shape=(offset,) + tuple(concat.out_shape[1:]))
