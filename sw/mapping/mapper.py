"""Map a fused integer graph onto an `AcceleratorConfig`: memory plan and descriptors.

Memory plan (documented contract with the hardware):

* Activations live in one pool of ``act_bytes``: every tensor (the input, each layer's output)
  gets an address from the liveness planner (`allocate`), so tensors alive at the same time
  never overlap and memory is reused once a tensor's last reader has run. A ``C x H x W`` map
  occupies `map_bytes` = ``ceil(C / pe_in) * pe_in * H * W`` bytes (channels padded to the PE
  array's input lanes), laid out as words of ``pe_in`` channels in ``[channel group][row]
  [column]`` order (`layout`); a vector of ``F`` features is an ``F x 1 x 1`` map.
  ``MemoryPlan.preserved`` says which layers' outputs are still intact after a run.
* A concatenation has no descriptor: each of its inputs is a view of its output, written by its
  producer at the offset of its first channel group (`concat_views`; the compiler's
  `concat.place_concats` makes every input one).
* Weights of all layers stay resident, layer after layer, in words of ``pe_out * pe_in`` bytes
  (`weight_bytes` of a layer; `layout.pack_weights` gives the order).
* Bias and requantization parameters take one entry per output channel; each layer's block
  starts on a multiple of ``pe_out`` entries and spans ``ceil(O / pe_out) * pe_out`` of them.

A layer that does not fit raises `MappingError` naming the layer, its PyTorch module path, the
limit and the configuration field that sets it. Tiling of large layers is not done yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import AcceleratorConfig
from .depthwise import runs_depthwise
from .descriptor import (OP_ADD, OP_CONV, OP_DW, POOL_CODES, POOL_UPSAMPLE, DescriptorError,
                         LayerDescriptor)
from ..errors import MappingError, PlacementError
from ..ir.graph import INPUT, QGraph, QLayer, map_shape
from . import allocate
from .layout import groups, merges, pairs, weight_words


def map_bytes(shape: tuple, config: AcceleratorConfig) -> int:
    """Bytes a ``C x H x W`` map (or a vector of ``F``: ``F x 1 x 1``) occupies in the
    activation memory."""
    c, h, w = map_shape(shape)
    return groups(c, config.pe_in) * config.pe_in * h * w


def weight_bytes(layer: QLayer, config: AcceleratorConfig) -> int:
    """Bytes of a convolution layer's weight block (zero for pooling layers); a word per
    channel group for a layer on the depthwise datapath."""
    if layer.op != "conv":
        return 0
    if runs_depthwise(layer, config):
        return groups(layer.weight.shape[1], config.pe_in) * config.macs_per_cycle
    return weight_words(layer, config, merged(layer, config)) * config.macs_per_cycle


def param_entries(layer: QLayer, config: AcceleratorConfig) -> int:
    """Parameter entries of a layer's block: whole rows of ``pe_out`` for a convolution."""
    return groups(layer.out_shape[0], config.pe_out) * config.pe_out if layer.op == "conv" else 0


@dataclass(frozen=True)
class MemoryPlan:
    """Where every tensor and parameter block lives. Lists are per layer."""

    act_in: tuple        # (addr, bytes) of each layer's input
    act_out: tuple       # (addr, bytes) of each layer's output
    weight: tuple        # (addr, bytes) of each layer's weights
    param: tuple         # (first entry, entries) of each layer's channel parameters
    weight_total: int
    param_total: int
    act_peak: int        # most activation bytes alive at once
    preserved: tuple     # per layer: its output is still intact after the last layer
    tensors: dict        # tensor name -> (addr, bytes)
    executed: tuple      # per layer: it has a descriptor (a concatenation has none)
    table: tuple = ()    # per layer: 0, or 1 + the index in ``tables`` of its table
    tables: tuple = ()   # the distinct int8 [256] tables, in table memory order
    depthwise: tuple = ()   # per layer: it runs on the depthwise datapath (`runs_depthwise`)
    paired: tuple = ()      # per layer: it runs in pixel pairs (`layout.pairs`)
    merged: tuple = ()      # per layer: it reads its last channel group merged (`merged`)

    def descriptors_before(self, count: int) -> int:
        """How many descriptors the first ``count`` layers have: the LAYERS value that runs
        them."""
        return sum(self.executed[:count])

    def per_layer(self, counts) -> list:
        """Per-descriptor ``counts`` (the hardware's, in descriptor order, for all descriptors
        or those of a program prefix) spread over the layers they cover: 0 for a layer without
        a descriptor."""
        return spread(self.executed, counts)


def spread(executed, counts) -> list:
    """``counts`` of the layers that run (``executed``), in order, spread over all layers: 0
    for a layer that does not run (a concatenation)."""
    counts, out = iter(counts), []
    for run in executed:
        value = next(counts, None) if run else 0
        if value is None:
            break
        out.append(int(value))
    return out


def _where(layer: QLayer) -> str:
    src = ", ".join(layer.sources) if layer.sources else layer.name
    return f"layer '{layer.name}' (module {src})"


def is_dense(layer: QLayer) -> bool:
    """A convolution whose kernel covers its whole unpadded input (a lowered linear layer)."""
    return layer.op == "conv" and layer.padding == (0, 0) and layer.kernel == layer.in_shape[1:]


def _check_geometry(layer: QLayer, config: AcceleratorConfig):
    def need(ok, what, value, limit, field):
        if not ok:
            raise MappingError(f"{_where(layer)}: {what} must be <= {limit} "
                               f"(AcceleratorConfig.{field}), not {value}")
    if layer.op == "concat":
        return
    if layer.op not in ("conv", "add"):
        raise MappingError(f"{_where(layer)}: op {layer.op!r} has no descriptor; run the "
                           "integer passes first")
    kh, kw = layer.kernel
    if not is_dense(layer):
        dilated = f" (a {layer.dilation[0]}x{layer.dilation[1]} dilated kernel's span)" \
            if layer.dilation != (1, 1) else ""
        need(max(kh, kw) <= config.max_kernel, "kernel size", f"{kh}x{kw}{dilated}",
             config.max_kernel, "max_kernel")
    need(max(layer.stride) <= config.max_stride, "stride", layer.stride, config.max_stride,
         "max_stride")
    need(layer.in_shape[2] <= config.max_width, "input width", layer.in_shape[2],
         config.max_width, "max_width")
    if layer.upsample != (1, 1):        # the walk counts output rows and columns
        need(layer.out_shape[2] <= config.max_width, "upsampled width", layer.out_shape[2],
             config.max_width, "max_width")
        need(layer.out_shape[1] <= config.max_height, "upsampled height", layer.out_shape[1],
             config.max_height, "max_height")
    need(layer.in_shape[1] <= config.max_height, "input height", layer.in_shape[1],
         config.max_height, "max_height")
    for present, wanted, field in ((layer.pool == "avg", "average pooling", "avg_pool"),
                                   (any(layer.pool_padding), "pool padding", "pool_padding")):
        if present and not getattr(config, field):
            raise MappingError(f"{_where(layer)}: {wanted} needs AcceleratorConfig.{field}, "
                               "which this configuration leaves out")
    _, ch, cw = layer.conv_shape
    if layer.pool != "none" and tuple(layer.pool_kernel) != (ch, cw):  # global pools are exempt
        pk = layer.pool_kernel
        need(max(pk) <= config.max_kernel, "pool window", f"{pk[0]}x{pk[1]}", config.max_kernel,
             "max_kernel")
        need(max(layer.pool_stride) <= config.max_stride, "pool stride", layer.pool_stride,
             config.max_stride, "max_stride")


def _check_ops(graph: QGraph, config: AcceleratorConfig) -> None:
    """Refuse layers the configuration has no datapath for, naming them."""
    for layer in graph.layers:
        if layer.op == "add" and not config.residual_add:
            raise MappingError(f"{_where(layer)}: a residual add needs "
                               "AcceleratorConfig.residual_add, which this configuration leaves "
                               "out")
        if layer.upsample != (1, 1) and not runs_depthwise(layer, config):
            if not config.depthwise_kernel:
                raise MappingError(f"{_where(layer)}: upsampling runs on the depthwise datapath "
                                   "(AcceleratorConfig.depthwise_kernel), which this "
                                   "configuration leaves out")
            raise MappingError(f"{_where(layer)}: an upsampling layer must be a depthwise 1x1 "
                               f"copy without pooling to run on the depthwise datapath, not "
                               f"groups={layer.groups} of {layer.in_shape[0]} channels with a "
                               f"{layer.kernel[0]}x{layer.kernel[1]} kernel and {layer.pool} "
                               "pooling")
        if layer.table is not None and not config.activation_tables:
            raise MappingError(f"{_where(layer)}: a function by table needs "
                               "AcceleratorConfig.activation_tables, which this configuration "
                               "leaves out")


def _place_tables(graph: QGraph, config: AcceleratorConfig) -> tuple[tuple, tuple]:
    """Per layer its table field (0 or 1 + slot), and the distinct tables by slot."""
    slots, fields = {}, []
    for layer in graph.layers:
        if layer.table is None:
            fields.append(0)
            continue
        key = layer.table.tobytes()
        slots.setdefault(key, len(slots))
        fields.append(slots[key] + 1)
    if len(slots) > config.activation_tables:
        raise MappingError(f"program needs {len(slots)} distinct activation tables, must fit "
                           f"the table memory of {config.activation_tables} "
                           "(AcceleratorConfig.activation_tables)")
    return tuple(fields), tuple(np.frombuffer(key, np.int8) for key in slots)


def concat_views(graph: QGraph, config: AcceleratorConfig) -> dict:
    """Tensor -> (concatenation, byte offset in it) for every concatenation input.
    `MappingError` unless each input is a layer's output in one slot only, of the
    concatenation's height and width, and every input but the last fills whole words."""
    views = {}
    for layer in graph.layers:
        if layer.op != "concat":
            continue
        c, h, w = layer.out_shape
        offset = 0
        for i, name in enumerate(layer.inputs):
            if name == INPUT or name in views:
                what = "the network input" if name == INPUT else \
                    f"tensor '{name}', which is in another concatenation slot too,"
                raise PlacementError(f"{_where(layer)}: {what} must be copied into the "
                                     "concatenation, not written into it in place; compile the "
                                     "model again")
            pc, ph, pw = graph.layer(name).out_shape
            if (ph, pw) != (h, w) or (i < len(layer.inputs) - 1 and pc % config.pe_in):
                raise PlacementError(
                    f"{_where(layer)}: input '{name}' ({pc}x{ph}x{pw}) must be {h}x{w} and, "
                    f"unless it is the last input, have a multiple of {config.pe_in} channels "
                    "(AcceleratorConfig.pe_in) to be written into the concatenation in place")
            views[name] = (layer.name, offset * h * w)
            offset += pc
        if offset != c:
            raise PlacementError(f"{_where(layer)}: output must have the {offset} channels of "
                                 f"its inputs, not {c}")
    return views


def add_partners(layers) -> dict:
    """Tensor -> the tensors an add among ``layers`` reads with it: `allocate.plan` starts
    them on words of different parity, so that the add reads both in one cycle."""
    apart = {}
    for layer in layers:
        if layer.op == "add" and layer.inputs[0] != layer.inputs[1]:
            a, b = layer.inputs
            apart.setdefault(a, []).append(b)
            apart.setdefault(b, []).append(a)
    return apart


def input_written(graph: QGraph) -> tuple:
    """The shape of the input as the host writes it: unfolded (`QGraph.input_im2col`), or
    whole though its readers may read slices."""
    return graph.consumers(INPUT)[0].in_shape if graph.input_im2col else graph.input_shape


def tensor_bytes(graph: QGraph, config: AcceleratorConfig) -> dict:
    """Tensor name (the input and every layer's output) -> its bytes in activation memory."""
    sizes = {INPUT: map_bytes(input_written(graph), config)}
    sizes.update({layer.name: map_bytes(layer.out_shape, config) for layer in graph.layers})
    return sizes


def _place_activations(graph: QGraph, config: AcceleratorConfig) -> tuple[dict, int]:
    """Tensor name -> (addr, bytes) in the activation pool, and the most bytes alive at once;
    `MappingError` if the pool cannot hold the tensors alive at once."""
    sizes = tensor_bytes(graph, config)
    buffers = allocate.lifetimes(graph, sizes.__getitem__)
    views = concat_views(graph, config)
    placed = allocate.plan(buffers, config.act_bytes, add_partners(graph.layers),
                           config.pe_in, views)
    roots = allocate.merge(buffers, views)
    total, step = allocate.peak(roots)
    if placed is None:
        layer = graph.layers[max(0, min(step, len(graph.layers) - 1))]
        alive = ", ".join(f"'{b.name}'" if b.name != INPUT else "the input" for b in roots
                          if b.first <= step <= b.last)
        raise MappingError(f"{_where(layer)}: activations alive at once ({alive}) need {total} "
                           f"bytes, must fit the activation memory of {config.act_bytes} bytes "
                           "(AcceleratorConfig.act_bytes)")
    return {b.name: (b.addr, b.size) for b in placed}, total


def plan_memory(graph: QGraph, config: AcceleratorConfig) -> MemoryPlan:
    """Place every layer of a lowered graph; raise `MappingError` for what does not fit."""
    _check_ops(graph, config)
    executed = tuple(layer.op != "concat" for layer in graph.layers)
    if not 1 <= sum(executed) <= config.program_depth:
        raise MappingError(f"program must have 1 to {config.program_depth} layers "
                           f"(AcceleratorConfig.program_depth; concatenations take none), not "
                           f"{sum(executed)}")
    weight, param = [], []
    w_addr = p_addr = 0
    for layer in graph.layers:
        _check_geometry(layer, config)
        for shape, what in ((layer.in_shape, "input"), (layer.out_shape, "output")):
            size = map_bytes(shape, config)
            if size > config.act_bytes:
                raise MappingError(
                    f"{_where(layer)}: {what} map {'x'.join(map(str, shape))} needs {size} bytes, "
                    f"must fit the activation memory of {config.act_bytes} bytes "
                    "(AcceleratorConfig.act_bytes)")
        size = weight_bytes(layer, config)
        weight.append((w_addr, size))
        w_addr += size
        entries = param_entries(layer, config)
        param.append((p_addr, entries))
        p_addr += entries
    if w_addr > config.weight_bytes:
        raise MappingError(f"weights need {w_addr} bytes, must fit the weight memory of "
                           f"{config.weight_bytes} bytes (AcceleratorConfig.weight_bytes)")
    if p_addr > config.param_entries:
        raise MappingError(f"channel parameters need {p_addr} entries, must fit "
                           f"{config.param_entries} (AcceleratorConfig.param_entries)")
    tensors, peak = _place_activations(graph, config)
    act_in = tuple(_input_region(layer, tensors, config) for layer in graph.layers)
    act_out = tuple(tensors[layer.name] for layer in graph.layers)
    alive = _intact(act_out, executed, len(act_out))
    table, tables = _place_tables(graph, config)
    return MemoryPlan(act_in, act_out, tuple(weight), tuple(param), w_addr, p_addr, peak,
                      tuple(i in alive for i in range(len(graph.layers))), tensors, executed,
                      table, tables, tuple(runs_depthwise(layer, config)
                                           for layer in graph.layers),
                      tuple(paired(layer, config) for layer in graph.layers),
                      tuple(merged(layer, config) for layer in graph.layers))


def _input_region(layer: QLayer, tensors: dict, config: AcceleratorConfig) -> tuple:
    """(addr, bytes) of what ``layer`` reads of its first input: the whole tensor, or a slice
    of its channels from a ``channel_offset`` on, which must start a word."""
    addr, size = tensors[layer.inputs[0]]
    if not layer.channel_offset:
        return addr, min(size, map_bytes(layer.in_shape, config))
    c, h, w = layer.in_shape
    check_slice(layer, config)
    return addr + layer.channel_offset * h * w, map_bytes(layer.in_shape, config)


def check_slice(layer: QLayer, config: AcceleratorConfig) -> None:
    """`PlacementError` unless ``layer`` reads its input from a word: a ``channel_offset`` that
    is a multiple of ``pe_in``."""
    if layer.channel_offset % config.pe_in:
        raise PlacementError(f"{_where(layer)}: channel_offset {layer.channel_offset} must be a "
                             f"multiple of {config.pe_in} (AcceleratorConfig.pe_in) to read a "
                             "slice of its input in place")


def _intact(act_out, executed, count: int, written=None) -> tuple:
    """Layers among the first ``count`` whose (addr, bytes) output region no later layer among
    them writes over (a concatenation writes nothing: its inputs are written into it). A region
    None is not in the activation memory (intact); ``written``: the regions the layers write
    (default ``act_out``; None: nothing)."""
    def overlaps(a, b):
        return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]
    written = act_out if written is None else written
    return tuple(i for i in range(count) if act_out[i] is None or not any(
        executed[j] and written[j] is not None and overlaps(act_out[i], written[j])
        for j in range(i + 1, count)))


def survivors(plan: MemoryPlan, count: int) -> tuple:
    """Layers among the first ``count`` whose output is intact after a run of just those
    layers (a program prefix)."""
    return _intact(plan.act_out, plan.executed, count)


def pool_stride(layer: QLayer) -> tuple[int, int]:
    """The descriptor's pool stride. Along an axis with one output the stride is never taken;
    the smallest one that still yields one output (``size + 2 * pad - kernel < stride``) keeps
    global pools within ``max_stride``."""
    sizes = layer.conv_shape[1:]
    return tuple(s if n > 1 else min(s, max(1, size + 2 * p - k + 1))
                 for s, n, size, p, k in zip(layer.pool_stride, layer.out_shape[1:], sizes,
                                             layer.pool_padding, layer.pool_kernel))


def paired(layer: QLayer, config: AcceleratorConfig) -> bool:
    """Whether ``layer`` runs in pixel pairs on ``config``: `layout.pairs`, on the convolution
    datapath."""
    return pairs(layer, config) and not runs_depthwise(layer, config)


def merged(layer: QLayer, config: AcceleratorConfig) -> bool:
    """Whether ``layer`` of a program on chip reads its last input channel group with merged
    lanes on ``config``: `layout.merges`, on the convolution datapath. (A streamed program
    does not merge: its chunks of input channels gather weights in the plain order.)"""
    return merges(layer, config) and not runs_depthwise(layer, config)


def layer_fields(layer: QLayer, depthwise: bool = False, pair: bool = False,
                 merge: bool = False) -> dict:
    """The descriptor fields of ``layer`` that do not depend on where it is placed (`describe`
    adds the bank and addresses); the cycle model reads them too. ``depthwise``: the layer
    runs on the depthwise datapath (`runs_depthwise`); ``pair``: in pixel pairs (`paired`),
    its walk a pooling of kernel 1 and column stride 2 over half as many columns; ``merge``:
    with merged lanes (`merged`)."""
    in_c, in_h, in_w = layer.in_shape
    out_c, conv_h, conv_w = layer.conv_shape
    kh, kw = layer.kernel
    ps_h, ps_w = pool_stride(layer)
    if layer.op == "add":       # sizes of a 1x1 convolution that keeps the shape
        return dict(op=OP_ADD, pool=POOL_CODES["none"], in_c=in_c, in_h=in_h, in_w=in_w,
                    out_c=in_c, conv_h=in_h, conv_w=in_w, out_h=in_h, out_w=in_w, k_h=1, k_w=1,
                    stride_h=1, stride_w=1, pad_h=0, pad_w=0, act_lo=layer.lo, act_hi=layer.hi,
                    pool_k_h=1, pool_k_w=1, pool_stride_h=1, pool_stride_w=1, pool_pad_h=0,
                    pool_pad_w=0, pool_mult=0, pool_shift=0, add_mult_a=int(layer.add_mult[0]),
                    add_mult_b=int(layer.add_mult[1]), add_shift=int(layer.add_shift))
    if layer.upsample != (1, 1):        # a copy of the upsampled input
        return dict(
            op=OP_DW, pool=POOL_UPSAMPLE, in_c=in_c, in_h=in_h, in_w=in_w, out_c=out_c,
            conv_h=conv_h, conv_w=conv_w, out_h=conv_h, out_w=conv_w, k_h=1, k_w=1, stride_h=1,
            stride_w=1, pad_h=0, pad_w=0, act_lo=layer.lo, act_hi=layer.hi,
            pool_k_h=layer.upsample[0], pool_k_w=layer.upsample[1], pool_stride_h=1,
            pool_stride_w=1, pool_pad_h=0, pool_pad_w=0, pool_mult=0, pool_shift=0)
    pair = bool(pair) and not depthwise
    # unpooled, out_w counts pairs; pooled, a pair is a window's two columns
    out_w = layer.out_shape[2] // 2 if pair and layer.pool == "none" else layer.out_shape[2]
    return dict(
        op=OP_DW if depthwise else OP_CONV, pool=POOL_CODES[layer.pool], in_c=in_c, in_h=in_h,
        in_w=in_w, out_c=out_c, conv_h=conv_h, conv_w=conv_w, out_h=layer.out_shape[1],
        out_w=out_w, k_h=kh, k_w=kw, stride_h=layer.stride[0], stride_w=layer.stride[1],
        pad_h=layer.padding[0], pad_w=layer.padding[1], act_lo=layer.lo, act_hi=layer.hi,
        pool_k_h=layer.pool_kernel[0], pool_k_w=1 if pair else layer.pool_kernel[1],
        pool_stride_h=ps_h, pool_stride_w=2 if pair else ps_w,
        pool_pad_h=layer.pool_padding[0], pool_pad_w=layer.pool_padding[1],
        pool_mult=int(layer.pool_mult), pool_shift=int(layer.pool_shift), pair=int(pair),
        merge=int(bool(merge) and not depthwise))


def describe(layer: QLayer, index: int, plan: MemoryPlan) -> LayerDescriptor | None:
    """The descriptor of ``graph.layers[index]`` placed by ``plan`` (None for a
    concatenation)."""
    if layer.op == "concat":
        return None
    second = plan.tensors[layer.inputs[1]][0] if layer.op == "add" else 0
    try:
        return LayerDescriptor(
            **layer_fields(layer, plan.depthwise[index], plan.paired[index],
                           plan.merged[index]),
            in_addr=plan.act_in[index][0],
            in2_addr=second,
            out_addr=plan.act_out[index][0],
            weight_addr=plan.weight[index][0], param_addr=plan.param[index][0],
            table=plan.table[index], stamp=1)
    except DescriptorError as exc:
        raise MappingError(f"{_where(layer)}: {exc}") from None


def describe_unplaced(layer: QLayer, depthwise: bool, table: int) -> LayerDescriptor | None:
    """A layer's descriptor with every address 0: its geometry, numerics and ``table`` field
    alone (None for a concatenation)."""
    if layer.op == "concat":
        return None
    try:
        return LayerDescriptor(**layer_fields(layer, depthwise), table=table, stamp=1)
    except DescriptorError as exc:
        raise MappingError(f"{_where(layer)}: {exc}") from None


def geometry(desc: LayerDescriptor) -> dict:
    """The `QLayer` geometry fields a descriptor encodes (inverse of `describe`)."""
    pools = {code: name for name, code in POOL_CODES.items()}
    upsampling = desc.op == OP_DW and desc.pool == POOL_UPSAMPLE
    if desc.op not in (OP_CONV, OP_ADD, OP_DW) or (desc.pool not in pools and not upsampling):
        raise DescriptorError(f"descriptor op {desc.op} / pool {desc.pool} is not a known code")
    if upsampling:
        return dict(op="conv", in_shape=(desc.in_c, desc.in_h, desc.in_w),
                    out_shape=(desc.out_c, desc.out_h, desc.out_w), lo=desc.act_lo,
                    hi=desc.act_hi, upsample=(desc.pool_k_h, desc.pool_k_w))
    if desc.op == OP_ADD:
        shape = (desc.in_c, desc.in_h, desc.in_w)
        return dict(op="add", in_shape=shape, out_shape=shape, lo=desc.act_lo, hi=desc.act_hi,
                    add_mult=(desc.add_mult_a, desc.add_mult_b), add_shift=desc.add_shift)
    # in pixel pairs (the mapper checks the rest of its shape): unpooled, out_w counts pairs;
    # pooled, the walk's one column of a window is a pair
    pair = desc.pair and desc.op == OP_CONV
    pooled = pair and desc.pool != POOL_CODES["none"]
    return dict(
        op="conv", pool=pools[desc.pool],
        in_shape=(desc.in_c, desc.in_h, desc.in_w),
        out_shape=(desc.out_c, desc.out_h, 2 * desc.out_w if pair and not pooled
                   else desc.out_w),
        stride=(desc.stride_h, desc.stride_w), padding=(desc.pad_h, desc.pad_w),
        lo=desc.act_lo, hi=desc.act_hi,
        pool_kernel=(desc.pool_k_h, 2 if pooled else desc.pool_k_w),
        pool_stride=(desc.pool_stride_h, 1 if pair and not pooled else desc.pool_stride_w),
        pool_padding=(desc.pool_pad_h, desc.pool_pad_w), pool_mult=desc.pool_mult,
        pool_shift=desc.pool_shift)
