"""The configuration-dependent pass that splits grouped convolutions into denser parts.

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
(``param_entries``) the configuration has left. Layers on the depthwise datapath stay whole.

Every part computes exactly the output channels the layer computed, from the same inputs, so
the golden model's values are unchanged.
"""

from __future__ import annotations

from ..config import AcceleratorConfig
from ..golden.cycles import layer_cycles
from ..ir.graph import QGraph, QLayer
from .depthwise import runs_depthwise
from .layout import groups


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


def _params(layer: QLayer, config: AcceleratorConfig) -> int:
    return groups(layer.out_shape[0], config.pe_out) * config.pe_out


def _options(layer: QLayer, config: AcceleratorConfig) -> list[tuple[int, int, int]]:
    """``(cycles, parts, parameter entries)`` of every legal split of ``layer``, unsplit first."""
    whole = (layer_cycles(layer, config), 1, _params(layer, config))
    if layer.op != "conv" or layer.groups == 1 or runs_depthwise(layer, config) \
            or layer.upsample != (1, 1):
        return [whole]
    o, c = layer.out_shape[0], layer.in_shape[0]
    options = [whole]
    for count in range(2, layer.groups + 1):
        if layer.groups % count or (c // count) % config.pe_in or (o // count) % config.pe_in \
                or layer.channel_offset % config.pe_in:
            continue
        part = parts(layer, count)[0]
        options.append((count * layer_cycles(part, config), count,
                        count * _params(part, config)))
    return options


def split_grouped(graph: QGraph, config: AcceleratorConfig) -> QGraph:
    """``graph`` with each grouped convolution split as the module docstring says (a graph
    without one that gains from it is returned as it is)."""
    options = {layer.name: _options(layer, config) for layer in graph.layers}
    gains = sorted((opts[0][0] - min(opts)[0], name) for name, opts in options.items())
    if not gains or gains[-1][0] <= 0:
        return graph
    depth = config.program_depth - sum(layer.op != "concat" for layer in graph.layers)
    entries = config.param_entries - sum(_params(layer, config) for layer in graph.layers
                                         if layer.op == "conv")
    chosen = {}
    for gain, name in reversed(gains):      # the layers that gain most choose first
        if gain <= 0:
            break
        base = options[name][0]
        fits = [base] + [opt for opt in options[name][1:]       # the whole layer always
                         if opt[1] - 1 <= depth and opt[2] - base[2] <= entries]
        cycles, count, params = min(fits)
        if count > 1:
            chosen[name] = count
            depth -= count - 1
            entries -= params - base[2]
    if not chosen:
        return graph
    layers = []
    for layer in graph.layers:
        if layer.name not in chosen:
            layers.append(layer)
            continue
        pieces = parts(layer, chosen[layer.name])
        layers += pieces
        layers.append(QLayer(name=layer.name, op="concat", in_shape=pieces[0].out_shape,
                             out_shape=layer.out_shape, out_scale=layer.out_scale,
                             sources=layer.sources, inputs=tuple(p.name for p in pieces)))
    return graph.replace(layers=tuple(layers))
