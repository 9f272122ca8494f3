"""Cycle model of the accelerator: what the hardware counters will read for a program.

A layer's time splits into its set-up (`setup_cycles`: descriptor fetch and the sequencer's
size program) and its run from START (`compute_run`); `program_cycles` chains them, the next
layer's set-up beside the layer before with `AcceleratorConfig.overlap_setup`, after it
without. `layer_cycles` is a layer on its own, set-up first.

The window generator issues one item of work per cycle (`layer_items`; a layer in pixel pairs,
`layout.pairs`, has one item per two output pixels; one with merged lanes, `layout.merges`,
a channel group less at each odd kernel column). Around the items each
layer spends ``LayerDescriptor.WORDS + 15`` cycles (descriptor fetch and checks: ``WORDS + 3``;
pipeline fill and drain and the done handshake: 12; `AcceleratorConfig.mac_stages` more for
the PE array's extra register stages), the sequencer's size products
(`striate.sw.mapping.derive.cycles`, about 150), the requantizer's extra latency (`post_latency`: with
``requant_steps`` > 1 lane groups that many cycles; with a serial requantizer its time per pixel
beyond the parallel pipeline's), the scaling's register stages (`scale_latency`), an average
pool's scaling in lane groups (`pool_latency`),
``writes_per_pixel`` cycles to store the last output pixel and,
with activation tables, a cycle for the writer's lookup (`table_latency`).
A chunk of input channels that keeps its sums in the partial-sum memory (``psum_out``)
ends ``PSUM_DRAIN`` (plus ``mac_stages``) cycles after its last item, with no requantizer,
pool or writer; the sequencer checks such chunks' partial sums
(`striate.sw.mapping.derive.PSUM_CHECKS`).
The model is exact unless some stage gets work faster than it takes it (`may_stall`: a conv pixel
in fewer items than the requantizer needs cycles, or an output pixel in fewer items than the
writer's cycles; with a serial requantizer also average pooling); then backpressure adds cycles
the model does not count, and it is a lower bound (`layer_cycles_bound` gives an upper one).

An add reads, sums and writes one word per cycle when its inputs lie in different RAMs of the
activation memory (`parallel_add`), else one word per two cycles, plus ``ADD_FIXED``,
``mac_stages`` (the add unit takes the PE array's register stages), ``round_stages`` and the
sequencer's program: exact.
"""

from __future__ import annotations

from ..config import AcceleratorConfig
from ..mapping import derive
from ..mapping.descriptor import OP_DW, LayerDescriptor
from ..ir.graph import QLayer
from ..mapping.layout import groups, kernel_items, pairs, writes_per_pixel
from ..mapping import depthwise
from ..mapping.depthwise import runs_depthwise
from ..mapping.mapper import layer_fields, merged
from ..ir.numerics import MULT_BITS

FIXED = LayerDescriptor.WORDS + 15
FRONT = LayerDescriptor.WORDS + 3      # FIXED's descriptor fetch and checks
# A chunk that keeps its sums (``psum_out``): after the last item's issue, its fetch, its
# products, its sums written to the partial-sum memory and the done handshake.
PSUM_DRAIN = 4
DEPTHWISE_STAGES = 2    # the depthwise window's line buffer read and window register
# An add: descriptor fetch and checks, then from its start to its done: a cycle to issue the
# first read, its data, the two stages of `AddLanes`, the write and the done handshake.
ADD_FIXED = LayerDescriptor.WORDS + 7


def _window_spans(out: int, kernel: int, stride: int, pad: int, size: int) -> list[int]:
    """Number of conv rows (or columns) inside each pooling window along one axis."""
    spans = []
    for p in range(out):
        start = p * stride - pad
        spans.append(min(size, start + kernel) - max(0, start))
    return spans


def chunks_per_pixel(layer: QLayer, config: AcceleratorConfig,
                     merge: bool | None = None) -> int:
    """Items per conv pixel: kernel positions times input channel groups, less a group at each
    odd kernel column with merged lanes (see `_merged`)."""
    return kernel_items(layer, config, _merged(layer, config, False, merge))


def add_words(layer: QLayer, config: AcceleratorConfig) -> int:
    """Words an add layer reads from each input and writes."""
    c, h, w = layer.out_shape
    return groups(c, config.pe_in) * h * w


def parallel_add(desc, config: AcceleratorConfig) -> bool:
    """Whether an add's inputs start on words of different parity (in different RAMs), so the
    add unit reads one word of each per cycle; otherwise it takes two cycles per word."""
    return (desc.in_addr // config.pe_in - desc.in2_addr // config.pe_in) % 2 == 1


def _depthwise(layer: QLayer, config: AcceleratorConfig, dw: bool | None) -> bool:
    """Whether the layer runs on the depthwise datapath: ``dw`` if given (a tile of a
    streamed layer runs as its descriptor says), else `runs_depthwise`."""
    return runs_depthwise(layer, config) if dw is None else dw


def layer_items(layer: QLayer, config: AcceleratorConfig, dw: bool | None = None,
                pair: bool | None = None, merge: bool | None = None) -> int:
    """Items (cycles of PE array work) the window generator (or the depthwise walk) issues for
    ``layer`` (in pixel pairs: see `_paired`; with merged lanes: `_merged`)."""
    if _depthwise(layer, config, dw):
        return depthwise.items(layer, config)
    _, ch, cw = layer.conv_shape
    _, oh, ow = layer.out_shape
    if layer.pool == "none":
        rows, cols = [1] * oh, [1] * ow
    else:
        rows = _window_spans(oh, layer.pool_kernel[0], layer.pool_stride[0],
                             layer.pool_padding[0], ch)
        cols = _window_spans(ow, layer.pool_kernel[1], layer.pool_stride[1],
                             layer.pool_padding[1], cw)
    if _paired(layer, config, False, pair):   # two neighbouring conv pixels an item
        cols = [1] * (ow // 2 if layer.pool == "none" else ow)
    conv_pixels = sum(rows) * sum(cols)
    return groups(layer.out_shape[0], config.pe_out) * conv_pixels * \
        chunks_per_pixel(layer, config, merge)


def requant_steps(config: AcceleratorConfig) -> int:
    return config.pe_out // config.requant_parallel


def serial_scale_digits(bits: int) -> int:
    """Steps of a shift-add multiplier taking ``bits`` bits of the 31-bit multiplier a step."""
    return -(-MULT_BITS // bits)


def serial_scale_cycles(bits: int) -> int:
    """Cycles of one shift-add scaling (`striate.hw.core.scale.SerialScale`) from its start pulse to
    its result: `serial_scale_digits` multiplier steps, then the rounding shift and clamp in
    three."""
    return serial_scale_digits(bits) + 3


def serial_item_cycles(config: AcceleratorConfig, last: bool = True) -> int:
    """Cycles the serial requantizer (``serial_scale_bits`` configs, `striate.hw.core.post.SerialPost`)
    spends on one conv pixel: accept, per lane group a parameter read, a start, the
    shift-add scaling (`serial_scale_cycles`) and a cycle to store its result (another to move
    on when there are several groups), the pooling merge and, for a window's ``last`` pixel,
    the hand-over to the output register."""
    steps = requant_steps(config)
    scale = serial_scale_cycles(config.serial_scale_bits)
    return 2 + steps * (scale + 3 + (steps > 1)) + last


def post_latency(config: AcceleratorConfig) -> int:
    """Cycles the requantizer adds after the last item, beyond the 7 pipeline stages of the
    parallel requantizer and pool counted in `FIXED`."""
    if config.serial_scale_bits:
        return serial_item_cycles(config) - 7
    steps = requant_steps(config)
    return steps if steps > 1 else 0


def scale_latency(config: AcceleratorConfig) -> int:
    """Cycles the scaling's register stages (``split_products`` and ``round_stages``) add to
    a convolution or depthwise layer: each is a cycle in the parallel requantizer and one in
    the pool. The serial requantizer's rounding takes its three cycles either way."""
    if config.serial_scale_bits:
        return 0
    return 2 * (config.split_products + config.round_stages)


def pool_latency(layer: QLayer, config: AcceleratorConfig, dw: bool = False) -> int:
    """Cycles an average pool adds after the last item: the parallel `striate.hw.core.post.Pool`
    scales ``requant_parallel`` channels a cycle, over the lane groups the requantizer took
    (`requant_steps`, or `depthwise_steps` for a depthwise layer). The serial requantizer's
    scaling is in `post_latency`."""
    if layer.pool != "avg" or config.serial_scale_bits:
        return 0
    return (depthwise_steps(config) if dw else requant_steps(config)) - 1


def table_latency(config: AcceleratorConfig) -> int:
    """Cycles the writer's table lookup stage adds to each convolution (with
    ``activation_tables``, whether the layer uses a table or not)."""
    return 1 if config.activation_tables else 0


def may_stall(layer: QLayer, config: AcceleratorConfig, dw: bool | None = None,
              psum_out: bool = False, pair: bool | None = None,
              merge: bool | None = None) -> bool:
    """True when a conv pixel takes fewer items than the requantizer needs cycles, or an output
    pixel fewer items than the writer needs cycles (a depthwise layer's pixels may come one a
    cycle; a pooling window in pixel pairs, `_paired`, takes one item per row). A chunk that
    keeps its sums (``psum_out``) never stalls."""
    if layer.op in ("add", "concat") or psum_out:
        return False
    if _depthwise(layer, config, dw):
        return bool(config.serial_scale_bits) or depthwise_steps(config) > 1
    chunks = chunks_per_pixel(layer, config, merge)
    if chunks < requant_steps(config):
        return True
    if config.serial_scale_bits and (layer.pool == "avg" or chunks
                                     < serial_item_cycles(config)):
        return True
    if layer.pool == "none":
        fewest = 1
    else:
        _, ch, cw = layer.conv_shape
        _, oh, ow = layer.out_shape
        fewest = min(_window_spans(oh, layer.pool_kernel[0], layer.pool_stride[0],
                                   layer.pool_padding[0], ch)) * \
            (1 if _paired(layer, config, False, pair) else
             min(_window_spans(ow, layer.pool_kernel[1], layer.pool_stride[1],
                               layer.pool_padding[1], cw)))
    return fewest * chunks < writes_per_pixel(config)


def ideal_cycles(layer: QLayer, config: AcceleratorConfig) -> float:
    """Cycles at full use of the PE array: the layer's MACs over the peak MACs per cycle."""
    return layer.macs / config.macs_per_cycle


def depthwise_steps(config: AcceleratorConfig) -> int:
    """Lane groups the parallel requantizer takes per depthwise output pixel: those holding
    its ``pe_in`` channels."""
    return max(1, config.pe_in // config.requant_parallel)


def _paired(layer: QLayer, config: AcceleratorConfig, dw: bool, pair: bool | None) -> bool:
    """Whether a layer runs in pixel pairs: ``pair`` if given (a tile of a streamed layer runs
    as its descriptor says), else `mapper.paired`."""
    return (pairs(layer, config) and not dw) if pair is None else bool(pair)


def _merged(layer: QLayer, config: AcceleratorConfig, dw: bool, merge: bool | None) -> bool:
    """Whether a layer reads its last channel group with merged lanes: ``merge`` if given (a
    descriptor's), else `mapper.merged` (a program on chip)."""
    return (merged(layer, config) and not dw) if merge is None else bool(merge)


def _sequencer_fields(layer: QLayer, config: AcceleratorConfig, dw: bool, psum: tuple,
                      pair: bool | None = None, merge: bool | None = None) -> dict:
    """The descriptor fields the sequencer's size program takes its time from."""
    return dict(layer_fields(layer, dw, _paired(layer, config, dw, pair),
                             _merged(layer, config, dw, merge)),
                psum_in=psum[0], psum_out=psum[1])


def layer_cycles(layer: QLayer, config: AcceleratorConfig, parallel: bool = False,
                 dw: bool | None = None, psum: tuple = (0, 0), pair: bool | None = None,
                 merge: bool | None = None) -> int:
    """Predicted LAYER_CYCLES counter value (exact unless `may_stall`). For an add, ``parallel``
    says whether it reads its two inputs in one cycle (`parallel_add`). ``psum``: the
    descriptor's ``(psum_in, psum_out)`` (a chunk of input channels); ``pair``: see
    `_paired`; ``merge``: `_merged`."""
    if layer.op == "concat":            # written in place by its inputs' producers
        return 0
    dw = _depthwise(layer, config, dw)
    sequencer = derive.cycles(_sequencer_fields(layer, config, dw, psum, pair, merge), config)
    if psum[1]:     # the sums stay in the partial-sum memory: nothing after the PE array
        return layer_items(layer, config, dw, pair, merge) + FRONT + sequencer + PSUM_DRAIN + \
            config.mac_stages
    if layer.op == "add":
        return (add_words(layer, config) * (1 if parallel else 2) + ADD_FIXED
                + config.mac_stages + config.round_stages + sequencer)
    if dw:      # the window's two stages; one write per pixel
        # a requantizer of several lane groups holds each pixel a cycle first, then takes
        # the pixel's groups
        held = requant_steps(config) > 1
        post = post_latency(config) if config.serial_scale_bits else \
            depthwise_steps(config) * held
        return (depthwise.items(layer, config) + FIXED + config.mac_stages + DEPTHWISE_STAGES
                + sequencer + post + scale_latency(config)
                + pool_latency(layer, config, dw) + 1 + table_latency(config))
    return (layer_items(layer, config, dw, pair, merge) + FIXED + config.mac_stages + sequencer
            + post_latency(config) + scale_latency(config)
            + pool_latency(layer, config) + writes_per_pixel(config) + table_latency(config))


def compute_run(layer, desc: LayerDescriptor, config: AcceleratorConfig,
                bound: bool = False) -> int:
    """Cycles from a layer's START to the cycle it is done on (``layer_done``); with
    ``bound``, an upper bound for a layer that may stall (`layer_cycles_bound`)."""
    dw = desc.op == OP_DW       # (a band may fit the depthwise window where its layer does not)
    psum, pair, merge = (desc.psum_in, desc.psum_out), bool(desc.pair), bool(desc.merge)
    front = FRONT + derive.cycles(_sequencer_fields(layer, config, dw, psum, pair, merge),
                                  config)
    if bound and may_stall(layer, config, dw, desc.psum_out, pair, merge):
        return layer_cycles_bound(layer, config, dw, pair, merge) - front
    parallel = layer.op == "add" and parallel_add(desc, config)
    return layer_cycles(layer, config, parallel, dw, psum, pair, merge) - front


def setup_cycles(layer, desc: LayerDescriptor, config: AcceleratorConfig) -> int:
    """Cycles from the first of a layer's descriptor fetch to the cycle its sizes are done
    (``derive_done``): a cycle per descriptor word, then the sequencer's program."""
    psum = (desc.psum_in, desc.psum_out)
    return LayerDescriptor.WORDS + derive.cycles(_sequencer_fields(layer, config,
                                                                   desc.op == OP_DW, psum,
                                                                   bool(desc.pair),
                                                                   bool(desc.merge)),
                                                 config)


def program_cycles(program, bound: bool = False) -> list[int]:
    """Predicted LAYER_CYCLES per layer of ``program`` (0 for a concatenation); on a
    configuration with external memory, of its two engines and transfers
    (`striate.sw.golden.timeline`). Exact unless a layer may stall (`may_stall`); then each
    layer's end is a lower bound, and with ``bound`` an upper one.

    A layer costs `layer_cycles` when it runs alone. With `AcceleratorConfig.overlap_setup`
    the next layer's set-up (`setup_cycles`) runs beside it, so the next layer
    costs its run (`compute_run`), 2 cycles, and whatever of its set-up the layer
    before did not cover."""
    cfg = program.config
    if cfg.ext_bytes:
        from .timeline import per_layer
        return per_layer(program, bound)
    done, start, out = 0, None, []      # (cycles counted from the one before the first)
    for layer, desc in zip(program.layers, program.descriptors):
        if desc is None:
            out.append(0)
            continue
        fetch = start + 1 if cfg.overlap_setup and start is not None else done + 1
        start = max(fetch + setup_cycles(layer, desc, cfg), done) + 2
        end = start + compute_run(layer, desc, cfg, bound)
        out.append(end - done)
        done = end
    return out


def layer_cycles_bound(layer: QLayer, config: AcceleratorConfig,
                       dw: bool | None = None, pair: bool | None = None,
                       merge: bool | None = None) -> int:
    """An upper bound of LAYER_CYCLES: `layer_cycles` (exact unless `may_stall`) plus, for a
    layer that may stall, each conv pixel's requantization and write as if nothing overlapped
    them. The driver's default timeout and the fuzzer's check use it."""
    exact = layer_cycles(layer, config, dw=dw, pair=pair, merge=merge)  # an add: two cycles
    if not may_stall(layer, config, dw, pair=pair, merge=merge):    # a word, the slower case
        return exact
    if _depthwise(layer, config, dw):
        _, oh, ow = layer.out_shape
        pixels, writes = groups(layer.in_shape[0], config.pe_in) * oh * ow, 1
        post = serial_item_cycles(config) if config.serial_scale_bits else \
            depthwise_steps(config)
    else:
        pixels = layer_items(layer, config, False, pair, merge) // \
            chunks_per_pixel(layer, config, merge)
        writes = writes_per_pixel(config)
        post = serial_item_cycles(config) if config.serial_scale_bits else requant_steps(config)
    bound = exact + pixels * (post + writes)
    if config.serial_scale_bits and layer.pool == "avg":   # scaled one channel at a time
        o, oh, ow = layer.out_shape
        outputs = groups(o, config.pe_out) * oh * ow
        bound += outputs * config.pe_out * (serial_scale_cycles(config.serial_scale_bits) + 3)
    return bound
