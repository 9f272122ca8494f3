"""The configuration-dependent pass that runs grouped convolutions as denser layers.

The convolution datapath multiplies every input word by ``pe_out`` output channels' weights. A
grouped convolution (``groups`` > 1, stored as the dense convolution with zero weights across
groups) run as one layer spends most of those products on the zeros: with ``G`` groups only
``1/G`` of them count. Split into ``S`` parts of ``G/S`` groups each, every part reads only its
own ``C/S`` input channels (a slice of the input read in place, `QLayer.channel_offset`) and
writes its ``O/S`` output channels into a concatenation that takes the layer's name (each part
a view of it, no copy), so a part wastes ``1 - S/G`` of its products instead of ``1 - 1/G``.
More parts cost more per-layer set-up, and parts of fewer than ``pe_out`` output channels
leave PE rows idle, so the pass picks ``S`` by the cycle model: the fewest predicted cycles
among the divisors of ``G`` whose slices start on whole words (``C/S`` and ``O/S`` multiples
of ``pe_in``), within the descriptors (``program_depth``) and parameter entries
(``param_entries``) the configuration has left. Layers on the depthwise datapath stay whole,
and so does a first layer whose input the host unfolds (`unfold.im2col_input`: one layer
reads the unfolded input).

A depthwise convolution with a depth multiplier ``m`` (each input channel feeds ``m`` outputs)
has one more way (`spread`): a 1x1 copy repeats each input channel ``m`` times and the
depthwise datapath runs the ``m * C`` channels, when its window takes the kernel. The cycle
model picks it when that is faster, and when the memories hold the copy's map and weights.

Every part computes exactly the output channels the layer computed, from the same inputs (a
copy moves int8 values unchanged), so the golden model's values are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import AcceleratorConfig
from ..golden.cycles import layer_cycles
from ..ir.graph import INPUT, QGraph, QLayer
from ..errors import MappingError
from ..ir.passes import copy_conv
from .concat import place_concats
from .depthwise import runs_depthwise
from .mapper import param_entries, plan_memory


def parts(layer: QLayer, count: int) -> list[QLayer]:
    """``layer`` (a convolution of ``groups`` divisible by ``count``) as ``count`` convolutions
    of ``groups / count`` groups each, part ``j`` reading input channels ``j*C/count`` on."""
    o, c = layer.out_shape[0], layer.in_shape[0]
    po, pc = o // count, c // count
    return [layer.replace(
        name=f"{layer.name}.part{j}", in_shape=(pc,) + tuple(layer.in_shape[1:]),
        out_shape=(po,) + tuple(layer.out_shape[1:]), groups=layer.groups // count,
        channel_offset=layer.channel_offset + j * pc,
        weight=layer.weight[j * po:(j + 1) * po, j * pc:(j + 1) * pc],
        bias=layer.bias[j * po:(j + 1) * po], mult=layer.mult[j * po:(j + 1) * po],
        shift=layer.shift[j * po:(j + 1) * po]) for j in range(count)]


def spread(layer: QLayer, scale: float) -> list[QLayer]:
    """``layer``, a depthwise convolution with a depth multiplier ``m`` (``groups`` = ``C``
    input channels, ``O = m * C`` outputs), as a 1x1 copy that repeats each input channel ``m``
    times (at the input's ``scale``) and the depthwise convolution of ``O`` channels over
    that, which the depthwise datapath can run."""
    c, o = layer.in_shape[0], layer.out_shape[0]
    rest = tuple(layer.in_shape[1:])
    picks = np.arange(o) // (o // c)
    repeat = np.zeros((o, c, 1, 1), np.int8)
    repeat[np.arange(o), picks, 0, 0] = 1
    copy = copy_conv(QLayer(name=f"{layer.name}.spread", op="pool", in_shape=layer.in_shape,
                            out_shape=(o,) + rest, out_scale=scale, sources=layer.sources,
                            inputs=layer.inputs), repeat)
    weight = np.zeros((o, o) + tuple(layer.kernel), np.int8)
    weight[np.arange(o), np.arange(o)] = layer.weight[np.arange(o), picks]
    return [copy, layer.replace(in_shape=(o,) + rest, groups=o, weight=weight,
                                inputs=(copy.name,))]


@dataclass(frozen=True)
class _Option:
    """A way to run a layer: the layers that replace it and their predicted cycles."""
    layers: tuple
    cycles: int
    params: int         # parameter entries

    @property
    def descriptors(self) -> int:
        return sum(layer.op != "concat" for layer in self.layers)

    @property
    def key(self) -> tuple:
        return self.cycles, self.descriptors


def _option(layers: list, config: AcceleratorConfig) -> _Option:
    return _Option(tuple(layers), sum(layer_cycles(layer, config) for layer in layers),
                   sum(param_entries(layer, config) for layer in layers))


def _options(layer: QLayer, graph: QGraph, config: AcceleratorConfig) -> list[_Option]:
    """Every legal way to run ``layer``, as it is first."""
    whole = _option([layer], config)
    unfolded = graph.input_im2col and INPUT in layer.inputs     # the host unfolds its input
    if layer.op != "conv" or layer.groups == 1 or runs_depthwise(layer, config) \
            or layer.upsample != (1, 1) or unfolded:
        return [whole]
    o, c = layer.out_shape[0], layer.in_shape[0]
    options = [whole]
    for count in range(2, layer.groups + 1):
        if layer.groups % count or (c // count) % config.pe_in or (o // count) % config.pe_in \
                or layer.channel_offset % config.pe_in:
            continue
        pieces = parts(layer, count)
        concat = QLayer(name=layer.name, op="concat", in_shape=pieces[0].out_shape,
                        out_shape=layer.out_shape, out_scale=layer.out_scale,
                        sources=layer.sources, inputs=tuple(p.name for p in pieces))
        options.append(_option(pieces + [concat], config))
    if layer.groups == c < o and not layer.channel_offset:
        spread_layers = spread(layer, graph.scale_of(layer.inputs[0]))
        if runs_depthwise(spread_layers[1], config):
            options.append(_option(spread_layers, config))
    return options


def _fits(graph: QGraph, config: AcceleratorConfig) -> bool:
    try:
        plan_memory(place_concats(graph, config), config)
    except MappingError:
        return False
    return True


def split_grouped(graph: QGraph, config: AcceleratorConfig) -> QGraph:
    """``graph`` with each grouped convolution run the fastest way the module docstring lists
    (a graph without one that gains from it is returned as it is). A copy (`spread`) adds a
    tensor and weights: where the memories cannot hold them beside the rest, the layers keep
    to parts or stay whole (the same values either way)."""
    split = _split(graph, config, spread_too=True)
    if split is graph or _fits(split, config):
        return split
    parted = _split(graph, config, spread_too=False)
    return parted if parted is graph or _fits(parted, config) else graph


def _split(graph: QGraph, config: AcceleratorConfig, spread_too: bool) -> QGraph:
    options = {layer.name: [o for o in _options(layer, graph, config)
                            if spread_too or not o.layers[0].name.endswith(".spread")]
               for layer in graph.layers}
    gains = sorted((opts[0].cycles - min(o.key for o in opts)[0], name)
                   for name, opts in options.items())
    depth = config.program_depth - sum(layer.op != "concat" for layer in graph.layers)
    entries = config.param_entries - sum(o[0].params for o in options.values())
    chosen = {}
    for gain, name in reversed(gains):      # the layers that gain most choose first
        if gain <= 0:
            break
        base = options[name][0]
        fits = [base] + [o for o in options[name][1:]      # the whole layer always fits
                         if o.descriptors - 1 <= depth and o.params - base.params <= entries]
        best = min(fits, key=lambda o: o.key)
        if best is not base:
            chosen[name] = best.layers
            depth -= best.descriptors - 1
            entries -= best.params - base.params
    if not chosen:
        return graph
    return graph.replace(layers=tuple(part for layer in graph.layers
                                      for part in chosen.get(layer.name, (layer,))))
