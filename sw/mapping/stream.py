"""Networks larger than the chip: every tensor and weight in external memory, every layer in
tiles that transfers move through double-buffered on-chip buffers (`striate.hw.core.engines`).

The plan (`stream_plan`):

* **External memory** holds the program's descriptors, the input (as the host writes it), each
  streamed layer's output (a concatenation's inputs inside it, as on chip), the network's
  output, each layer's weights and parameters in their on-chip order (`layout`).
* **Maps on chip** (`_segment`): the longest run of layers to the end whose tensors fit the
  activation memory together (`_resident`, placed as on chip) keeps them there, each layer a
  tile of its whole map (`_whole_tiles`, in spans of output channels as weights need): one
  load brings the tensors made before the run, the network's output is stored at the end.
  The compiler keeps that program where the cycle model predicts it faster.
* **Tiles.** A layer is cut into bands of output rows (`bands`: each band reads its input rows
  with the halo its kernel and pooling need, padding only where the map does), cut into
  columns the same way when no band of the whole width fits, and, when its weights exceed half
  the weight memory, into groups of output channels. The band height is the one the cost model
  (`_cost`) predicts fastest among those whose buffers fit; the width the widest that fits.
* **Buffers.** The activation memory is two halves (different banks): tile ``k`` reads its
  input and writes its output in half ``k % 2``. Weight and parameter blocks follow one another
  in a half of their memory, the next half when one is full (`_Halves`; a tile that keeps the
  previous tile's weights loads none).
* **Order** (`_order`): the loads of tile ``k`` run while tile ``k - 1`` computes; tile ``k``
  waits for them (``wait``); the stores of tile ``k - 1`` run while tile ``k`` computes. A tile
  whose input rows tile ``k - 1`` writes first waits for those stores; its weights and
  parameters (in blocks tile ``k - 1`` does not use) still load before them, while tile
  ``k - 1`` computes.
* **Weights ahead** (`_prefetch`): a weight or parameter load then moves earlier, in pieces,
  into the time the transfer engine idles while tiles before ``k - 1`` compute, after the last
  tile that reads the bytes it overwrites.
* **Program ring.** Descriptors past the program memory come in by transfers into it
  (`_ring`): at each multiple of half the program memory, a transfer refills the half that has
  run with the next ones.

The last store of each layer is stamped: LAYER_CYCLES then holds, per layer, the cycle its
output was complete in external memory (a layer whose output stays on chip stamps its last
tile).
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass

from ..config import AcceleratorConfig, MemoryTiming
from ..errors import MappingError
from ..ir.graph import INPUT, QGraph, QLayer, map_shape
from ..golden import timeline
from . import allocate, bands, depthwise, layout, memmap
from .depthwise import runs_depthwise
from .descriptor import MOVE_TARGETS, DescriptorError, LayerDescriptor, MoveDescriptor
from .layout import doubled, groups, pairs
from .mapper import (_check_geometry, _check_ops, _intact, _place_tables, _where,
                     add_partners, check_slice, concat_views, input_written, layer_fields,
                     map_bytes, spread, tensor_bytes)

ACT, WEIGHTS, PARAMS, PROGRAM = (MOVE_TARGETS[name] for name in ("act", "weights", "params",
                                                                 "program"))
SLOT_BYTES = 4 * LayerDescriptor.WORDS
ENTRY_BYTES = 4 * memmap.PARAM_ENTRY_WORDS


def _align(n: int, unit: int = 8) -> int:
    return -(-n // unit) * unit


@dataclass(frozen=True, eq=False)
class Tile:
    """A band of output rows (perhaps of some columns only) and a group of output channels of
    one layer, perhaps from a chunk of its input channels only."""
    index: int              # the layer's index in the graph
    band: bands.Band        # its layer computes just this tile (channels sliced)
    og: tuple               # (first, stop) output channel groups of pe_out (conv)
    cg: tuple | None = None     # (first, stop) input channel groups of pe_in: a chunk
    chunk: tuple = (0, 1)       # (index, count) of the chunks of this tile's sums

    @property
    def psum(self) -> tuple:
        """The descriptor's (psum_in, psum_out): every chunk but the first adds to the partial
        sums, every one but the last keeps them."""
        k, n = self.chunk
        return int(k > 0), int(k < n - 1)


@dataclass(frozen=True)
class StreamPlan:
    """Where everything lives in external memory, and the program that moves it.

    ``steps`` is the program in order: ``(layer, descriptor)`` for a tile's layer (its band
    layer) or ``(None, move)`` for a transfer; ``owners`` gives each step's graph layer index
    (-1 for a program refill). ``tensors`` maps each tensor to its external ``(addr, bytes)``;
    ``weights`` and ``params`` each layer's block (or None). ``program`` is where the
    descriptors lie. ``stamped`` says per layer whether it has a stamp (a layer that runs).
    ``kept`` gives, per layer, the on-chip ``(addr, bytes)`` of an output that stays on chip
    and is never stored (None: it is in external memory after a run); ``written``, of every
    output the layers on chip write in place, the network's output too."""
    steps: tuple
    owners: tuple
    tensors: dict
    weights: tuple
    params: tuple
    program: int
    ext_total: int
    stamped: tuple
    table: tuple
    tables: tuple
    depthwise: tuple
    timing: MemoryTiming
    kept: tuple = ()        # per layer: on-chip (addr, bytes) of an output never stored
    written: tuple = ()     # per layer: on-chip (addr, bytes) of an output kept there a while

    @property
    def descriptors(self) -> tuple:
        return tuple(d for _, d in self.steps)

    @property
    def executed(self) -> tuple:
        return self.stamped

    def per_layer(self, counts) -> list:
        """Per-stamp ``counts`` spread over the layers (`mapper.spread`)."""
        return spread(self.stamped, counts)

    def steps_before(self, layers: int) -> int:
        """Descriptors in the program's first ``layers`` layers: through the last step they
        own (a prefix of the program that computes and stores their outputs)."""
        if layers >= len(self.stamped):
            return len(self.steps)
        return 1 + max(i for i, owner in enumerate(self.owners) if 0 <= owner < layers)

    def survivors(self, count: int) -> tuple:
        """Layers among the first ``count`` whose output can be read after a run of just
        those: in external memory, or kept on chip and not written over by a later one."""
        kept = self.kept or (None,) * len(self.stamped)
        return _intact(kept, self.stamped, count, self.written or kept)

    @property
    def refills(self) -> bool:
        """Whether the program is longer than the program memory (it refills it as it runs)."""
        return any(d.op == 0 and d.target == PROGRAM for d in self.descriptors)


def _ext_layout(graph: QGraph, config: AcceleratorConfig) -> tuple[dict, list, list, int]:
    """External addresses: tensors (concatenation inputs inside theirs), each conv layer's
    weights and parameters; returns them and the first free byte."""
    views = concat_views(graph, config)
    tensors, addr = {}, 0
    shapes = [(INPUT, input_written(graph))] + [(l.name, l.out_shape) for l in graph.layers]
    for name, shape in shapes:
        if name in views:
            continue
        size = map_bytes(shape, config)
        tensors[name] = (addr, size)
        addr += _align(size)
    def place(name):        # a view's address: its concatenation's (perhaps itself a view)
        if name not in tensors:
            concat, offset = views[name]
            tensors[name] = (place(concat) + offset,
                             map_bytes(graph.layer(name).out_shape, config))
        return tensors[name][0]
    for name in views:
        place(name)
    weights, params = [], []
    for i, layer in enumerate(graph.layers):
        if layer.op != "conv":
            weights.append(None)
            params.append(None)
            continue
        pack = depthwise.pack_weights if runs_depthwise(layer, config) else layout.pack_weights
        size = len(pack(layer, config))
        weights.append((addr, size))
        addr += _align(size)
        entries = len(layout.pack_params(layer, config)) // memmap.PARAM_ENTRY_WORDS
        params.append((addr, entries * ENTRY_BYTES))
        addr += _align(entries * ENTRY_BYTES)
    return tensors, weights, params, addr


def _slice_outputs(layer: QLayer, og: tuple, config: AcceleratorConfig,
                   dw: bool = False) -> QLayer:
    """``layer`` computing output channel groups ``og`` only; run depthwise (``dw``), from
    the same channels of its input only."""
    po = config.pe_out
    o = layer.out_shape[0]
    first, stop = og[0] * po, min(o, og[1] * po)
    if layer.op != "conv" or (first, stop) == (0, o):
        return layer
    if dw:
        return layer.replace(weight=layer.weight[first:stop, first:stop],
                             bias=layer.bias[first:stop], mult=layer.mult[first:stop],
                             shift=layer.shift[first:stop], groups=stop - first,
                             in_shape=(stop - first, *layer.in_shape[1:]),
                             out_shape=(stop - first, *layer.out_shape[1:]))
    return layer.replace(weight=layer.weight[first:stop], bias=layer.bias[first:stop],
                         mult=layer.mult[first:stop], shift=layer.shift[first:stop],
                         out_shape=(stop - first, *layer.out_shape[1:]), groups=1)


def _slice_inputs(layer: QLayer, cg: tuple, config: AcceleratorConfig) -> QLayer:
    """``layer`` reading input channel groups ``cg`` (of pe_in) only: a chunk whose sums
    are partial."""
    pi = config.pe_in
    c = layer.in_shape[0]
    first, stop = cg[0] * pi, min(c, cg[1] * pi)
    if (first, stop) == (0, c):
        return layer
    return layer.replace(weight=layer.weight[:, first:stop],
                         in_shape=(stop - first, *layer.in_shape[1:]), groups=1)


def _chunks(layer: QLayer, config: AcceleratorConfig, count: int = 1) -> list:
    """The input channel groups of a convolution in ``count`` chunks at least (of sizes
    within one of each other), and more if the weights of ``pe_out`` output channels of one
    chunk would exceed half the weight memory; `MappingError` if that needs chunks the
    configuration has no partial-sum memory for, or chunks of less than ``pe_in`` channels."""
    cg_total = groups(layer.in_shape[0], config.pe_in)
    half_w = config.weight_bytes // 2
    per_og = _weight_rows(_slice_outputs(layer, (0, 1), config), config, False)
    kh, kw = layer.kernel
    word = kh * kw * config.macs_per_cycle       # one input channel group's weights
    if word > half_w or per_og > half_w and not config.psum_entries:
        why = ("; a layer beyond that runs in chunks of input channels, which need "
               "AcceleratorConfig.psum_entries, which this configuration leaves out"
               if word <= half_w else
               f", and so must those of {config.pe_in} input channels: {word} bytes")
        raise MappingError(f"{_where(layer)}: the weights of {config.pe_out} output channels "
                           f"need {per_og} bytes, must fit half the weight memory ({half_w} "
                           f"bytes, AcceleratorConfig.weight_bytes){why}")
    count = min(cg_total, max(count, -(-cg_total // (half_w // word))))
    size = -(-cg_total // count)
    return [(g, min(cg_total, g + size)) for g in range(0, cg_total, size)]


def _psum_fits(tile_layer: QLayer, config: AcceleratorConfig) -> bool:
    """Whether a chunked tile's conv pixels fit the partial-sum memory, as the sequencer
    bounds them (`derive.PSUM_CHECKS`)."""
    _, oh, ow = tile_layer.out_shape
    pk_h, pk_w = tile_layer.pool_kernel
    return groups(tile_layer.out_shape[0], config.pe_out) * oh * ow * pk_h * pk_w \
        <= config.psum_entries


def _buffers(tile_layer: QLayer, config: AcceleratorConfig) -> int:
    """Activation bytes a tile's buffers take in its half: input(s) and output."""
    count = 2 if tile_layer.op == "add" else 1
    return count * map_bytes(tile_layer.in_shape, config) + map_bytes(tile_layer.out_shape,
                                                                      config)


def _weight_rows(layer: QLayer, config: AcceleratorConfig, dw: bool) -> int:
    """Weight memory bytes of a layer (or tile)."""
    if layer.op != "conv":
        return 0
    if dw:
        return groups(layer.in_shape[0], config.pe_in) * config.macs_per_cycle
    kh, kw = layer.kernel
    return groups(layer.out_shape[0], config.pe_out) * groups(layer.in_shape[0], config.pe_in) \
        * kh * kw * config.macs_per_cycle


def _cost(tiles: list, config: AcceleratorConfig, timing: MemoryTiming, dw: bool) -> float:
    """Predicted cycles of a layer's tiles (run depthwise if ``dw``): compute and transfers of
    consecutive tiles overlap, so each step costs the longer of a tile's compute and the next
    tile's transfers, plus the first tile's loads and the last tile's stores."""
    from ..golden import cycles as layer_model
    compute, moved = [], []
    for tile in tiles:
        layer = tile.band.layer
        compute.append(layer_model.layer_cycles(layer, config, dw=dw, psum=tile.psum,
                                                merge=False))
        moved.append(timing.latency + (_buffers(layer, config)
                                       + _weight_rows(layer, config, dw)) /
                     timing.bytes_per_cycle)
    total = moved[0] + moved[-1] / 2
    for k, c in enumerate(compute):
        total += max(c, moved[k + 1] if k + 1 < len(moved) else 0)
    return total


def _tiles(index: int, layer: QLayer, config: AcceleratorConfig,
           timing: MemoryTiming) -> list[Tile]:
    """The tiles of one layer: output channel groups that fit half the weight and parameter
    memories, each in the bands the cost model prefers among those that fit half the
    activation memory."""
    dw = runs_depthwise(layer, config)
    half_act = config.act_bytes // 2
    conv = layer.op == "conv" and not dw
    chunks = _chunks(layer, config) if conv else [None]
    while True:
        found = _plan(index, layer, chunks, config, timing, dw)
        if found is not None or not conv or not config.psum_entries or \
                len(chunks) == groups(layer.in_shape[0], config.pe_in):
            break
        chunks = _chunks(layer, config, 2 * len(chunks))    # smaller input tiles
    if found is None:
        raise MappingError(f"{_where(layer)}: no tile of its output (a row of one column at "
                           f"least) fits half the activation memory ({half_act} bytes, "
                           "AcceleratorConfig.act_bytes)" + (
                               "" if len(chunks) == 1 else
                               f" in {len(chunks)} chunks of input channels whose sums fit "
                               f"the partial-sum memory ({config.psum_entries} entries, "
                               "AcceleratorConfig.psum_entries)"))
    spans, best, width = found
    tiles = []
    for og in spans:
        part = _slice_outputs(layer, og, config, dw).replace(channel_offset=0)
        for b in bands.split(part, best, dw, width):
            if len(chunks) == 1:
                tiles.append(Tile(index, b, og))
                continue
            tiles += [Tile(index, dataclasses.replace(b, layer=_slice_inputs(b.layer, cg, config)),
                           og, cg, (k, len(chunks))) for k, cg in enumerate(chunks)]
    return tiles


def _whole_tiles(index: int, layer: QLayer, config: AcceleratorConfig) -> list[Tile] | None:
    """The tiles of a layer whose input and output stay on chip (`_resident`): its whole map,
    in the spans of output channels and chunks of input channels that `_tiles` would cut;
    None if no span fits, or a chunked span's sums exceed the partial-sum memory."""
    dw = runs_depthwise(layer, config)
    chunks = _chunks(layer, config) if layer.op == "conv" and not dw else [None]
    spans = _spans(layer, chunks, config, dw)
    if spans is None:
        return None
    _, oh, ow = layer.out_shape
    _, ih, iw = layer.in_shape
    tiles = []
    for og in spans:
        # the layer itself, reading its whole input map in place (a band might read fewer rows)
        part = _slice_outputs(layer, og, config, dw).replace(channel_offset=0)
        whole = bands.Band((0, oh), (0, ih), part, 0, (0, ow), (0, iw))
        if len(chunks) == 1:
            tiles.append(Tile(index, whole, og))
            continue
        cut = [dataclasses.replace(whole, layer=_slice_inputs(whole.layer, cg, config))
               for cg in chunks]
        if not _psum_fits(cut[0].layer, config):
            return None
        tiles += [Tile(index, b, og, cg, (k, len(chunks)))
                  for k, (b, cg) in enumerate(zip(cut, chunks))]
    return tiles


def _resident(graph: QGraph, config: AcceleratorConfig, start: int) -> dict | None:
    """On-chip ``(addr, bytes)`` of the tensors that layers ``start`` on read or write, when
    they fit the activation memory (`allocate`: apart wherever alive together), those made
    before ``start`` loaded before it; None if they do not fit, or a concatenation from
    ``start`` on has an input made before it, or such a tensor lies in a concatenation."""
    views = concat_views(graph, config)
    made_before = {INPUT} | {layer.name for layer in graph.layers[:start]}
    later = graph.layers[start:]
    outside = {name for layer in later for name in layer.inputs} & made_before
    if any(name in views for name in outside) or any(
            layer.op == "concat" and made_before.intersection(layer.inputs) for layer in later):
        return None
    sizes = tensor_bytes(graph, config)
    keep = outside | {layer.name for layer in later}
    buffers = [b if b.first >= start else dataclasses.replace(b, first=start - 1)
               for b in allocate.lifetimes(graph, sizes.__getitem__) if b.name in keep]
    placed = allocate.plan(buffers, config.act_bytes, add_partners(later), config.pe_in,
                           {name: v for name, v in views.items() if name in keep})
    return None if placed is None else {b.name: (b.addr, b.size) for b in placed}


def _word_groups(config: AcceleratorConfig) -> int:
    """Output channel groups (of ``pe_out``) in one activation word: a span of a layer's
    output channels is a multiple of them, so that its stores and the next span's start on
    whole words."""
    return max(1, config.pe_in // config.pe_out)


def _depthwise_span(layer: QLayer, config: AcceleratorConfig) -> int:
    """Output channel groups per span of a depthwise layer (a channel reads its own input
    channel): as many as have their weights and parameters in half those memories;
    `MappingError` if one group's do not. (The depthwise datapath has ``pe_out >= 2 * pe_in``,
    so a group is whole activation words.)"""
    per_og = _weight_rows(_slice_outputs(layer, (0, 1), config, True), config, True)
    size = min(config.weight_bytes // 2 // per_og, config.param_entries // 2 // config.pe_out)
    if size < 1:
        raise MappingError(f"{_where(layer)}: the weights and parameters of {config.pe_out} "
                           "channels of a depthwise layer must fit half the weight and the "
                           "parameter memory (AcceleratorConfig.weight_bytes, param_entries)")
    return min(groups(layer.out_shape[0], config.pe_out), size)


def _spans(layer: QLayer, chunks: list, config: AcceleratorConfig, dw: bool) -> list | None:
    """The (first, stop) output channel groups of each span of a layer run in ``chunks`` of
    input channel groups ([None]: not a convolution on the PE array): as many groups as have
    their weights and parameters in half those memories (and, chunked, one pixel each in the
    partial sums), whole activation words of them; None if not one group does."""
    og_total = groups(layer.out_shape[0], config.pe_out) if layer.op == "conv" else 1
    og_size = og_total
    if dw:
        og_size = _depthwise_span(layer, config)
    if chunks[0] is not None:
        per_og = _weight_rows(_slice_inputs(_slice_outputs(layer, (0, 1), config), chunks[0],
                                            config), config, dw)
        og_size = min(og_total, config.weight_bytes // 2 // max(1, per_og),
                      config.param_entries // 2 // config.pe_out)
        if len(chunks) > 1:     # one output pixel of each group fits the partial sums
            og_size = min(og_size, config.psum_entries
                          // (layer.pool_kernel[0] * layer.pool_kernel[1]))
    if og_size < og_total:
        og_size -= og_size % _word_groups(config)
    if og_size < 1:
        return None
    return [(g, min(og_total, g + og_size)) for g in range(0, og_total, og_size)]


def _plan(index: int, layer: QLayer, chunks: list, config: AcceleratorConfig,
          timing: MemoryTiming, dw: bool) -> tuple | None:
    """(output channel group spans, band height, tile width) of a layer run in ``chunks`` of
    input channel groups ([None]: not a convolution on the PE array), or None if no tile
    fits."""
    spans = _spans(layer, chunks, config, dw)
    if spans is None:
        return None
    chunked = len(chunks) > 1
    part = _slice_outputs(layer, spans[0], config, dw)
    if chunked:
        part = _slice_inputs(part, chunks[0], config)
    for width in _widths(layer.out_shape[2]):
        best = _best_band(index, part, spans, width, config, timing, dw, chunked)
        if best is not None:
            return spans, best, width
    return None


def _widths(width: int) -> list:
    """Tile widths to try, widest first: the whole width, then ``ceil(width / n)`` for n = 2,
    3, .. (each distinct width once)."""
    return sorted({-(-width // n) for n in range(1, width + 1)}, reverse=True)


def _best_band(index: int, part: QLayer, spans: list, width: int, config: AcceleratorConfig,
               timing: MemoryTiming, dw: bool, chunked: bool = False) -> int | None:
    """The band height the cost model prefers for tiles ``width`` columns wide among those
    whose buffers fit half the activation memory (and, ``chunked``, whose conv pixels fit
    the partial-sum memory), or None if none does."""
    half_act = config.act_bytes // 2

    def fits(tile_layer):
        return _buffers(tile_layer, config) <= half_act and \
            (not chunked or _psum_fits(tile_layer, config))
    rows, best, tried = part.out_shape[1], None, 0
    smallest = bands.band(part, 0, 1, dw, (0, width))
    if smallest is not None and not fits(smallest.layer):
        return None         # taller tiles need as much at least
    for count in range(rows, 0, -1):
        first = bands.band(part, 0, min(rows, count), dw, (0, width))
        if first is None or not fits(first.layer):
            continue
        try:
            cut = bands.split(part, count, dw, width)
        except MappingError:
            continue
        if not all(fits(b.layer) for b in cut):
            continue
        cost = _cost([Tile(index, b, og) for og in spans for b in cut], config, timing, dw)
        if best is None or cost < best[0]:
            best = (cost, count)
        tried += 1
        if tried == 6:          # smaller bands only add halo and per-tile cycles
            break
    return best[1] if best else None


class _Halves:
    """Places the weight (or parameter) blocks of successive tiles in a memory of ``size``
    units: one after another in one half, and a block that does not fit the rest of its half at
    the start of the other half. So a block never overlaps the one before it (each fits a
    half), and the blocks of a half stay there until the other half fills, which lets their
    successors load while earlier tiles run (`_prefetch`)."""

    def __init__(self, size: int):
        self.half = size // 2
        self.base = self.next = 0

    def place(self, units: int) -> int:
        if self.next + units > self.base + self.half:
            self.base = self.next = self.half - self.base
        self.next += units
        return self.next - units


class _Emitter:
    """Builds the descriptors of the tiles in order (`_order`)."""

    def __init__(self, graph, config, plan_parts, start: int | None = None,
                 resident: dict | None = None):
        self.graph, self.config = graph, config
        self.tensors, self.weights, self.params, self.table = plan_parts
        self.start = len(graph.layers) if start is None else start
        self.resident = resident or {}      # tensor -> on-chip (addr, bytes), layers start on
        self.loaded = False     # whether the tensors made before `start` are loaded
        self.made = {layer.name: i for i, layer in enumerate(graph.layers)}
        self.w_blocks = _Halves(config.weight_bytes)
        self.p_blocks = _Halves(config.param_entries)
        self.last_weights = None
        self.current = None     # {target: (first, stop) local byte} of the weights in use
        self.blocks = {}        # per tile index: its `current`

    def tile(self, k: int, tile: Tile, last: bool):
        """(loads, layer step, stores) of tile ``k`` (``last``: of the program)."""
        if tile.index >= self.start:
            return self._resident_tile(k, tile, last)
        return self._tile(k, tile)

    def _stored_shape(self, name: str) -> tuple:
        graph = self.graph
        if name != INPUT:
            return map_shape(graph.layer(name).out_shape)
        return map_shape(input_written(graph))

    def _first_group(self, layer: QLayer, tile: Tile, dw: bool) -> int:
        """The first channel group of its input a tile reads."""
        pi = self.config.pe_in
        return layer.channel_offset // pi + (tile.cg[0] if tile.cg else 0) \
            + (tile.og[0] * self.config.pe_out // pi if dw else 0)

    def _resident_tile(self, k: int, tile: Tile, last: bool):
        """A tile of a layer whose inputs and output stay on chip (`_resident`): it reads and
        writes them in place; the first such tile loads the tensors made before, the last
        tile stores the network's output."""
        cfg, graph = self.config, self.graph
        layer = graph.layers[tile.index]
        part = tile.band.layer
        dw = runs_depthwise(layer, cfg)
        pi = cfg.pe_in
        loads = []
        if not self.loaded:
            for name in self.resident:
                if name == INPUT or self.made[name] < self.start:
                    c, h, w = self._stored_shape(name)
                    loads += self._map_moves(name, (c, h, w), (0, h), (0, w), 0, groups(c, pi),
                                             self.resident[name][0], (h, w), False)
            if loads:       # the activation memory is free once no layer runs
                loads[0] = dataclasses.replace(loads[0], wait=1)
            self.loaded = True
        inputs = [layer.inputs[0]] + ([layer.inputs[1]] if layer.op == "add" else [])
        addrs = []
        for name in inputs:
            _, h, w = self._stored_shape(name)
            addrs.append(self.resident[name][0] + self._first_group(layer, tile, dw) * h * w * pi)
        _, oh, ow = map_shape(layer.out_shape)
        out_addr = self.resident[layer.name][0] + tile.og[0] * cfg.pe_out // pi * oh * ow * pi
        weight_loads, weight_addr, param_addr = self._weights(k, tile, layer, part, dw)
        desc = self._descriptor(tile, layer, part, dw, addrs, out_addr, weight_addr, param_addr)
        stores = []
        if last and graph.output in self.resident:
            c, h, w = self._stored_shape(graph.output)
            stores = self._map_moves(graph.output, (c, h, w), (0, h), (0, w), 0, groups(c, pi),
                                     self.resident[graph.output][0], (h, w), True)
            stores[0] = dataclasses.replace(stores[0], wait=1)
        return loads + weight_loads, (part, desc), stores

    def _map_moves(self, tensor: str, shape: tuple, rows: tuple, cols: tuple, group0: int,
                   groups_n: int, local: int, local_shape: tuple, store: bool,
                   skip: tuple = (0, 0)) -> list:
        """The transfers of rows ``rows`` and columns ``cols`` of channel groups ``group0 ..
        group0 + groups_n`` of a map, to or from a tile of ``local_shape`` (rows, columns) at
        ``local`` whose rows and columns from ``skip`` on hold them: one transfer of a chunk
        per channel group when the tile is the map's whole width, else one per channel group
        (a chunk per row) or one per row (a chunk per channel group), whichever is fewer."""
        c, h, w = map_shape(shape)
        pi = self.config.pe_in
        base = self.tensors[tensor][0]
        (a, b), (left, right) = rows, cols
        local_h, local_w = local_shape
        ext = base + (group0 * h + a) * w * pi + left * pi
        local += (skip[0] * local_w + skip[1]) * pi
        move = dict(op=0, store=int(store), target=ACT)
        if (left, right) == (0, w) == (skip[1], local_w):
            return [MoveDescriptor(**move, ext_addr=ext, local_addr=local,
                                   length=(b - a) * w * pi, count=groups_n,
                                   ext_stride=h * w * pi, local_stride=local_h * w * pi)]
        length = (right - left) * pi
        if groups_n <= b - a:
            return [MoveDescriptor(**move, ext_addr=ext + g * h * w * pi,
                                   local_addr=local + g * local_h * local_w * pi, length=length,
                                   count=b - a, ext_stride=w * pi, local_stride=local_w * pi)
                    for g in range(groups_n)]
        return [MoveDescriptor(**move, ext_addr=ext + r * w * pi,
                               local_addr=local + r * local_w * pi, length=length,
                               count=groups_n, ext_stride=h * w * pi,
                               local_stride=local_h * local_w * pi)
                for r in range(b - a)]

    def _tile(self, k: int, tile: Tile):
        cfg, graph = self.config, self.graph
        layer = graph.layers[tile.index]
        part = tile.band.layer
        half = (k % 2) * (cfg.act_bytes // 2)
        dw = runs_depthwise(layer, cfg)
        loads = []
        in_base = half
        inputs = [layer.inputs[0]] + ([layer.inputs[1]] if layer.op == "add" else [])
        addrs = []
        for name in inputs:
            loads += self._map_moves(name, self._stored_shape(name), tile.band.in_rows,
                                     tile.band.in_cols, self._first_group(layer, tile, dw),
                                     groups(part.in_shape[0], cfg.pe_in), in_base,
                                     part.in_shape[1:], False)
            addrs.append(in_base)
            in_base += map_bytes(part.in_shape, cfg)
        out_addr = in_base
        weight_loads, weight_addr, param_addr = self._weights(k, tile, layer, part, dw)
        desc = self._descriptor(tile, layer, part, dw, addrs, out_addr, weight_addr, param_addr)
        if tile.psum[1]:        # its sums stay in the partial-sum memory
            return loads + weight_loads, (part, desc), []
        first = tile.og[0] * cfg.pe_out // cfg.pe_in
        stores = self._map_moves(layer.name, layer.out_shape, tile.band.rows, tile.band.cols,
                                 first, groups(part.out_shape[0], cfg.pe_in), out_addr,
                                 part.out_shape[1:], True, (tile.band.skip, tile.band.skip_col))
        return loads + weight_loads, (part, desc), stores

    def _weights(self, k: int, tile: Tile, layer: QLayer, part: QLayer, dw: bool):
        """(loads, weight row, parameter entry) of a tile: its weights and parameters, loaded
        unless the tile before used the same ones."""
        cfg = self.config
        if layer.op != "conv":
            return [], 0, 0
        loads = []
        key = (tile.index, tile.og, tile.cg)
        if key != self.last_weights:
            w_ext, _ = self.weights[tile.index]
            p_ext, _ = self.params[tile.index]
            size = _weight_rows(part, cfg, dw)
            # a depthwise layer's weights: a row per input channel group
            offset = tile.og[0] * cfg.pe_out // cfg.pe_in * cfg.macs_per_cycle if dw \
                else tile.og[0] * _weight_rows(_slice_outputs(layer, (0, 1), cfg), cfg, dw)
            local = self.w_blocks.place(size)
            if tile.cg is None:
                loads.append(MoveDescriptor(op=0, target=WEIGHTS, ext_addr=w_ext + offset,
                                            local_addr=local, length=size, count=1))
            else:
                loads += _chunk_weights(layer, tile, w_ext + offset, local, cfg)
            entries = groups(part.out_shape[0], cfg.pe_out) * cfg.pe_out
            first_entry = self.p_blocks.place(entries)
            loads.append(MoveDescriptor(op=0, target=PARAMS,
                                        ext_addr=p_ext + tile.og[0] * cfg.pe_out * ENTRY_BYTES,
                                        local_addr=first_entry * ENTRY_BYTES,
                                        length=entries * ENTRY_BYTES, count=1))
            self.last_weights = key
            self.current = {WEIGHTS: (local, local + size),
                            PARAMS: (first_entry * ENTRY_BYTES,
                                     (first_entry + entries) * ENTRY_BYTES)}
        self.blocks[k] = self.current
        return loads, self.current[WEIGHTS][0], self.current[PARAMS][0] // ENTRY_BYTES

    def _descriptor(self, tile: Tile, layer: QLayer, part: QLayer, dw: bool, addrs: list,
                    out_addr: int, weight_addr: int, param_addr: int) -> LayerDescriptor:
        try:
            # in pairs where its layer's weights have the copy (`layout.doubled`)
            pair = pairs(part, self.config) and doubled(layer, self.config)
            return LayerDescriptor(**layer_fields(part, dw, pair), in_addr=addrs[0],
                                   in2_addr=addrs[1] if len(addrs) > 1 else 0,
                                   out_addr=out_addr, weight_addr=weight_addr,
                                   param_addr=param_addr, table=self.table[tile.index], wait=1,
                                   psum_in=tile.psum[0], psum_out=tile.psum[1])
        except DescriptorError as exc:
            raise MappingError(f"{_where(layer)}: {exc}") from None


def _chunk_weights(layer: QLayer, tile: Tile, ext: int, local: int,
                   config: AcceleratorConfig) -> list:
    """The transfers of a chunk's weights: of each output group and kernel position, the
    chunk's input channel groups (`layout.pack_weights` order: ``[og][ky][kx][g]``), at most
    as many at a time as a transfer's count field holds."""
    row = config.macs_per_cycle
    cg_total = groups(layer.in_shape[0], config.pe_in)
    (g0, g1), (o0, o1) = tile.cg, tile.og
    kh, kw = layer.kernel
    runs, length = (o1 - o0) * kh * kw, (g1 - g0) * row
    most = (1 << MoveDescriptor.bits("count")) - 1
    return [MoveDescriptor(op=0, target=WEIGHTS, ext_addr=ext + (i * cg_total + g0) * row,
                           local_addr=local + i * length, length=length,
                           count=min(most, runs - i), ext_stride=cg_total * row,
                           local_stride=length)
            for i in range(0, runs, most)]


def _overlap(a: MoveDescriptor, b: MoveDescriptor) -> bool:
    """Whether two transfers touch a common external byte."""
    def extent(move):
        return move.ext_addr, move.ext_addr + (move.count - 1) * move.ext_stride + move.length
    (a0, a1), (b0, b1) = extent(a), extent(b)
    if a1 <= b0 or b1 <= a0:
        return False
    step = max(1, b.ext_stride)
    for i in range(a.count):        # chunk i of a against the chunks of b that could meet it
        x = a.ext_addr + i * a.ext_stride
        lo = max(0, -(-(x - b.ext_addr - b.length + 1) // step))
        hi = min(b.count - 1, (x + a.length - 1 - b.ext_addr) // step)
        if any(x < y + b.length and y < x + a.length
               for y in (b.ext_addr + j * b.ext_stride for j in range(lo, hi + 1))):
            return True
    return False


def _order(tiles, emitter, overlap: bool):
    """The steps of all tiles, software-pipelined (module docstring), with the last store of
    each layer stamped. Returns (steps, owners)."""
    steps, owners = [], []
    pending, pending_owner = [], None
    last_of_layer = {t.index: k for k, t in enumerate(tiles)}
    for k, tile in enumerate(tiles):
        loads, step, stores = emitter.tile(k, tile, k == len(tiles) - 1)
        if last_of_layer[tile.index] == k:
            if stores:
                stores = stores[:-1] + [dataclasses.replace(stores[-1], stamp=1)]
            else:           # its output stays on chip: done when the layer is
                step = (step[0], dataclasses.replace(step[1], stamp=1))
        # a tile on chip may use any bank: it runs after every store before it
        if pending and (not overlap or tile.index >= emitter.start or any(
                _overlap(load, store) for load in loads for store in pending)):
            if overlap:     # weights and parameters: before the stores, while tile k - 1 runs
                early = [m for m in loads if m.target != ACT]
                loads = [m for m in loads if m.target == ACT]
                steps += [(None, m) for m in early]
                owners += [tile.index] * len(early)
            first = pending[0].__class__(**{**pending[0].__dict__, "wait": 1})
            steps += [(None, first)] + [(None, s) for s in pending[1:]]
            owners += [pending_owner] * len(pending)
            pending = []
        if not overlap:
            loads = [m.__class__(**{**m.__dict__, "wait": 1}) for m in loads]
        steps += [(None, m) for m in loads]
        owners += [tile.index] * len(loads)
        steps.append(step)
        owners.append(tile.index)
        steps += [(None, s) for s in pending]
        owners += [pending_owner] * len(pending)
        pending, pending_owner = stores, tile.index
    if pending:
        first = pending[0].__class__(**{**pending[0].__dict__, "wait": 1})
        steps += [(None, first)] + [(None, s) for s in pending[1:]]
        owners += [pending_owner] * len(pending)
    return steps, owners


#: The smallest piece of weights worth a transfer of its own (each costs a set-up and the
#: memory's first-word latency).
PIECE_BYTES = 256
#: Cycles `_prefetch` allows a piece beyond its transfer: its chunks' set-up cycles and a
#: margin (its descriptor's fetch and checks overlap the transfer before it).
PIECE_MARGIN = 32


def _prefetch(steps, owners, blocks: dict, config: AcceleratorConfig, timing: MemoryTiming):
    """The steps with weight and parameter loads moved earlier, where the transfer engine
    idles: `_order` loads tile ``k``'s weights while tile ``k - 1`` computes, which stalls tile
    ``k`` when they take longer. A load may run while any tile from the one after the last
    that reads its block (``blocks``: per tile index, the local byte ranges it reads) computes;
    weights split into pieces that fill the idle time the cycle model predicts, latest tile
    first. Every tile waits for the transfers before it, so a piece never meets a tile that
    reads its bytes. Returns (steps, owners)."""
    before = timeline.run(steps, config, timing)
    tiles = [i for i, (layer, _) in enumerate(steps) if layer is not None]
    tile_at = {t: j for j, t in enumerate(tiles)}
    slot_of = {}                # transfer step -> the tile computing while it may run
    for i in range(len(steps)):
        if steps[i][0] is None:
            slot_of[i] = bisect.bisect(tiles, i) - 1
    rate = 8 / timing.beat_interval
    # per tile: cycles the engine idles between its last transfer before any that waits for
    # the tile to end, and the tile's end
    busy = {j: before.times[t][0] for j, t in enumerate(tiles)}
    waits = set()
    for i, j in slot_of.items():
        if j >= 0 and j not in waits:
            if steps[i][1].wait:
                waits.add(j)
            else:
                busy[j] = max(busy[j], before.times[i][1])
    idle = {j: max(0, before.times[t][1] - busy[j]) for j, t in enumerate(tiles)}

    def cycles(move):
        return timeline.transfer_cycles(move, timing) + PIECE_MARGIN

    extra = {}              # tile -> transfers to add while it computes
    moved = {}              # step -> what stays of it (None: all moved)
    for i, j in slot_of.items():
        move = steps[i][1]
        if move.target not in (WEIGHTS, PARAMS) or move.store or j < 1:
            continue
        k = j + 1               # the tile that reads it
        first = move.local_addr
        stop = first + (move.count - 1) * move.local_stride + move.length
        last = next((t for t in range(k - 1, -1, -1) if move.target in blocks.get(t, {})
                     and blocks[t][move.target][0] < stop
                     and first < blocks[t][move.target][1]), -1)     # reads what it overwrites
        left = move
        for t in range(k - 2, last, -1):
            if idle[t] <= timing.latency + PIECE_MARGIN:
                continue
            if left.count > 1 or left.target == PARAMS:     # whole, where it fits
                if cycles(left) <= idle[t]:
                    extra.setdefault(t, []).append((i, left))
                    idle[t] -= cycles(left)
                    left = None
                    break
                continue
            unit = config.macs_per_cycle
            size = min(left.length,
                       int((idle[t] - timing.latency - PIECE_MARGIN) * rate) // unit * unit)
            while size >= min(PIECE_BYTES, left.length) and \
                    cycles(dataclasses.replace(left, length=size)) > idle[t]:
                size -= unit * max(1, size // unit // 8)
            if size < min(PIECE_BYTES, left.length):
                continue
            piece = dataclasses.replace(left, length=size)
            extra.setdefault(t, []).append((i, piece))
            idle[t] -= cycles(piece)
            if size == left.length:
                left = None
                break
            left = dataclasses.replace(left, ext_addr=left.ext_addr + size,
                                       local_addr=left.local_addr + size,
                                       length=left.length - size)
        if left is not move:
            moved[i] = left
    out, own = [], []

    def add(t):             # tile t's new transfers, before any that waits for it to end
        for i, piece in extra.pop(t, []):
            out.append((None, piece))
            own.append(owners[i])

    for i, step in enumerate(steps):
        j = slot_of.get(i)
        if j is not None and step[1].wait and j in extra:
            add(j)
        if i in moved:
            if moved[i] is not None:
                out.append((None, moved[i]))
                own.append(owners[i])
        else:
            out.append(step)
            own.append(owners[i])
        if i + 1 < len(steps) and steps[i + 1][0] is not None or i + 1 == len(steps):
            add(j if j is not None else tile_at[i])
    return out, own


def _ring(steps, owners, config: AcceleratorConfig, base: int):
    """The steps with program refills: at each multiple ``p >= D/2`` of half the program
    memory's ``D`` slots, a transfer brings descriptors ``p + D/2 .. p + D - 1`` into the half
    of the ring that has run."""
    depth = config.program_depth
    half = depth // 2
    if len(steps) <= depth:
        return list(steps), list(owners)
    if half < 2:
        raise MappingError(f"program of {len(steps)} descriptors needs a program memory of at "
                           f"least 4 to refill it, not {depth} "
                           "(AcceleratorConfig.program_depth)")
    out, own = [], []
    queue = list(zip(steps, owners))
    refills = []
    while queue:
        p = len(out)
        if p >= half and p % half == 0:
            refills.append(p)
            out.append(None)        # placed below, once the length is known
            own.append(-1)
            continue
        step, owner = queue.pop(0)
        out.append(step)
        own.append(owner)
    total = len(out)
    for p in refills:
        first = p + half
        count = max(0, min(half, total - first))
        if count == 0:
            out[p] = (None, MoveDescriptor(op=0, target=PROGRAM, ext_addr=base,
                                           local_addr=0, length=SLOT_BYTES, count=1))
            continue
        out[p] = (None, MoveDescriptor(op=0, target=PROGRAM, ext_addr=base + first * SLOT_BYTES,
                                       local_addr=(first % depth) * SLOT_BYTES,
                                       length=count * SLOT_BYTES, count=1))
    return out, own


def stream_plan(graph: QGraph, config: AcceleratorConfig,
                timing: MemoryTiming = MemoryTiming()) -> StreamPlan:
    """Place ``graph`` in external memory and tile it (module docstring); `MappingError` if a
    layer cannot be tiled or the external memory is too small."""
    if not config.ext_bytes:
        raise MappingError("streaming from external memory needs AcceleratorConfig.ext_bytes")
    _check_ops(graph, config)
    for layer in graph.layers:
        _check_geometry(layer, config)
        check_slice(layer, config)
    tensors, weights, params, free = _ext_layout(graph, config)
    table, tables = _place_tables(graph, config)
    program = _align(free, 8)
    streamed = [_tiles(i, layer, config, timing) if layer.op != "concat" else []
                for i, layer in enumerate(graph.layers)]
    start, resident = _segment(graph, config)
    candidates = []         # (steps, owners, first layer kept on chip, its tensors)
    for first in sorted({start, len(graph.layers)}):
        tiles = [t for i in range(first) for t in streamed[i]]
        tiles += [t for i in range(first, len(graph.layers)) if graph.layers[i].op != "concat"
                  for t in _whole_tiles(i, graph.layers[i], config)]
        kept = resident if first == start else {}
        emitter = _Emitter(graph, config, (tensors, weights, params, table), first, kept)
        steps, owners = _order(tiles, emitter, config.act_banks >= 2)
        # loads ahead where the model predicts them faster, program refills included
        for plan in (steps, owners), _prefetch(steps, owners, emitter.blocks, config, timing):
            candidates.append((*_ring(*plan, config, program), first, kept))
    steps, owners, start, resident = min(
        candidates, key=lambda c: timeline.run(c[0], config, timing).cycles)
    total = program + len(steps) * SLOT_BYTES
    if total > config.ext_bytes:
        raise MappingError(f"the program needs {total} bytes of external memory, must fit its "
                           f"{config.ext_bytes} (AcceleratorConfig.ext_bytes)")
    stamped = tuple(layer.op != "concat" for layer in graph.layers)
    if sum(stamped) > memmap.stamp_words(config):
        raise MappingError(f"program must have at most {memmap.stamp_words(config)} layers "
                           f"(concatenations take none), one LAYER_CYCLES word each, not "
                           f"{sum(stamped)}")
    views = concat_views(graph, config)

    def stored(name):       # the network's output and the tensors inside it are stored
        while name in views:
            name = views[name][0]
        return name == graph.output
    written = tuple(resident.get(layer.name) if i >= start else None
                    for i, layer in enumerate(graph.layers))
    kept = tuple(None if stored(layer.name) else place
                 for layer, place in zip(graph.layers, written))
    return StreamPlan(tuple(steps), tuple(owners), tensors, tuple(weights), tuple(params),
                      program, total, stamped, table, tables,
                      tuple(runs_depthwise(l, config) for l in graph.layers), timing, kept,
                      written)


def _segment(graph: QGraph, config: AcceleratorConfig) -> tuple[int, dict]:
    """The first layer of the longest run of layers to the end whose tensors stay on chip
    (`_resident`; each layer's whole map a tile, `_whole_tiles`), and those tensors' places;
    ``(len(layers), {})`` if not even the last layer's fit."""
    n = len(graph.layers)
    whole = n
    while whole > 0 and (graph.layers[whole - 1].op == "concat" or _whole_tiles(
            whole - 1, graph.layers[whole - 1], config) is not None):
        whole -= 1
    for start in range(whole, n):
        resident = _resident(graph, config, start)
        if resident is not None:
            return start, resident
    return n, {}


def traffic(plan: StreamPlan, layers: int) -> list[tuple[int, int]]:
    """Per layer: bytes its transfers read from and write to external memory (weights,
    parameters and input bands read; output bands written); program refills are left out."""
    out = [[0, 0] for _ in range(layers)]
    for owner, (layer, move) in zip(plan.owners, plan.steps):
        if layer is None and owner >= 0:
            out[owner][int(move.store)] += move.length * move.count
    return [tuple(row) for row in out]
