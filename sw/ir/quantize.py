"""Post-training quantization: float graph + calibration data -> unfused integer `QGraph`.

Calibration runs the float reference on the calibration images and takes, for each tensor the
hardware stores, a clipping value ``c`` and ``scale = c / 127``: by default (``"minmax"``) its
largest magnitude; ``"percentile"`` the 99.99th percentile of its magnitudes; ``"mse"`` the
clipping value that minimizes the mean squared error of the tensor quantized with it (`clip`). A convolution or linear layer is
calibrated on the tensor at the end of the chain of range-only ops after it (ReLU, ReLU6, max
pooling), since that is what the fused layer stores; ReLU, ReLU6, max pooling and flatten keep
their input's scale, so they lower to clamps and pools with no rescaling. Average pooling gets
its own output scale, calibrated the same way, and folds ``s_in / (kh * kw * s_out)`` into its
multiplier: an average spans a narrower range than its inputs (a global average pool of a
feature map often a small fraction of it), which the input's scale would leave to a few int8
levels. A residual add gets its own output scale the same way and adds its two inputs with
integer multipliers (`numerics.add_multipliers`). A concatenation stores all its inputs at one
scale, calibrated on its output; the layers that compute its inputs take that scale as theirs
(`concat_sources`), and an input whose producer cannot (the network input, or a tensor other
layers read too) is requantized by a 1x1 identity convolution first. An element-wise function
computed by table (tanh, sigmoid, SiLU, ...: `tables`) gets its own output scale too, and its
table maps its input's int8 values at their scale to its output's.

Bias correction: rounding a layer's weights to int8 shifts the mean of each output channel by
the rounding error times the mean input each weight multiplies (padding reads zeros). The
quantized bias takes that shift back out, measured on the calibration data in float
(`tap_means`): the int8 layer then matches the float layer's output mean on it, as in the
empirical bias correction of Nagel et al. (2019). It costs nothing at run time and keeps the
integer contract: the bias is just another stored int32.
"""

from __future__ import annotations

import numpy as np

from . import numerics, tables
from ..errors import QuantizationError, UnsupportedLayerError
from ..frontend.float_ref import run_float
from .graph import INPUT, QGraph, QLayer, kernel_taps, map_shape
from .kernels import out_size
from .passes import copy_conv, identity_conv
from ..frontend.trace import PARAM_NAMES

BIAS_MAX = 1 << 30     # largest stored bias; leaves half the accumulator to the products
RANGE_ONLY = ("relu", "relu6", "maxpool", "pad", "upsample")
# nodes whose output gets a scale of its own
RESCALING = ("conv", "linear", "avgpool", "add", "table")


CALIBRATION_METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
MSE_SAMPLES = 1 << 17       # values of a tensor the MSE search evaluates (a fixed random subset)
MSE_STEPS = 80              # candidate clipping values, from max|x| / MSE_STEPS to max|x|


def clip(values: np.ndarray, method: str) -> float:
    """The clipping value of a calibrated tensor for ``method`` (see the module docstring).

    >>> x = np.random.default_rng(0).laplace(size=100_000)             # long tails
    >>> [round(clip(x, method), 2) for method in CALIBRATION_METHODS]
    [11.95, 9.64, 10.16]
    """
    a = np.abs(np.asarray(values, np.float64)).ravel()
    if not a.size or not a.max() > 0:
        return 0.0
    top = float(a.max())
    if method == "minmax":
        return top
    if method == "percentile":
        return float(np.percentile(a, PERCENTILE))
    # A fixed random subset: an even stride would alias with the tensor's layout (every 16th
    # value of 16-wide maps is one column, often all background).
    sample = a if a.size <= MSE_SAMPLES else \
        a[np.random.default_rng(0).choice(a.size, MSE_SAMPLES, replace=False)]
    best, best_err = top, None
    for c in top * np.arange(MSE_STEPS, 0, -1) / MSE_STEPS:     # ties keep the wider clip
        s = c / numerics.INT8_MAX
        err = float(np.mean((sample - s * np.minimum(np.rint(sample / s), numerics.INT8_MAX))
                            ** 2))
        if best_err is None or err < best_err:
            best, best_err = float(c), err
    return best


def _scale(max_abs: float) -> float:
    # A tensor that is zero on every calibration image gets scale 1/127: any scale is exact for it.
    return float(max_abs) / numerics.INT8_MAX if max_abs > 0 else 1.0 / numerics.INT8_MAX


def _readers(nodes: list) -> dict:
    """Tensor name -> the nodes that read it (the last node's tensor is also the output)."""
    readers = {}
    for node in nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node)
    return readers


def _chain_end(nodes: list, readers: dict, name: str) -> str:
    """The tensor at the end of the range-only ops (ReLU, ReLU6, max pooling) that alone read
    tensor ``name``, one after another: what a fused layer ending there stores."""
    last = nodes[-1].name
    while name != last and len(readers.get(name, [])) == 1 and \
            readers[name][0].kind in RANGE_ONLY:
        name = readers[name][0].name
    return name


def float_tensors(nodes: list, calibration: np.ndarray) -> dict:
    """Every tensor of the float graph on ``calibration`` (float64), by name (`INPUT` too)."""
    x = np.asarray(calibration, dtype=np.float64)
    outs = dict(zip((node.name for node in nodes), run_float(nodes, x, return_all=True)))
    outs[INPUT] = x
    return outs


def calibrate(nodes: list, calibration: np.ndarray, method: str = "minmax",
              outs: dict | None = None) -> tuple[float, dict]:
    """Return the input scale and, per node that sets a scale (`RESCALING` and concatenations),
    the scale of its output tensor, by node name, with clipping values by ``method`` (one of
    `CALIBRATION_METHODS`).

    A concatenation stores its inputs at one scale, its own; the layers that compute its inputs
    (through range-only ops that nothing else reads) are given that scale, so their outputs can
    be written straight into it (`concat_sources`). ``outs``: `float_tensors` of the same
    data, when the caller has them.
    """
    x = np.asarray(calibration, dtype=np.float64)
    outs = outs if outs is not None else float_tensors(nodes, x)
    readers = _readers(nodes)
    scales = {}
    for node in nodes:
        if node.kind in RESCALING or node.kind == "concat":
            scales[node.name] = _scale(clip(outs[_chain_end(nodes, readers, node.name)], method))
    for node in reversed(nodes):
        if node.kind == "concat":
            for source in concat_sources(nodes, node):
                scales[source] = scales[node.name]
    _narrow_table_inputs(nodes, readers, scales)
    return _scale(clip(x, method)), scales


def _narrow_table_inputs(nodes: list, readers: dict, scales: dict) -> None:
    """A function by table that saturates (tanh, sigmoid, the hard functions) maps every input
    beyond where it stops changing at its output's resolution (`tables.flat_beyond`) to the
    same entry, so the tensor it reads needs no range beyond that: the layer that computes it
    (through range-only ops that only lead to the table) takes the finer scale, when no other
    tensor shares its scale."""
    by_name = {node.name: node for node in nodes}
    shared = {source for node in nodes if node.kind == "concat"
              for source in [node.name, *concat_sources(nodes, node)]}
    for node in nodes:
        if node.kind != "table":
            continue
        name = node.inputs[0]
        while name in by_name and by_name[name].kind in RANGE_ONLY and \
                len(readers[name]) == 1:
            name = by_name[name].inputs[0]
        if name not in scales or name in shared or len(readers.get(name, [])) != 1:
            continue
        if by_name[name].kind not in RESCALING:
            continue
        a = node.attrs
        top = scales[name] * numerics.INT8_MAX
        edge = tables.flat_beyond(a["function"], a["options"], scales[node.name], top)
        if edge < 0.99 * top:       # (a function that keeps changing ends near ``top``)
            scales[name] = _scale(edge)


def concat_sources(nodes: list, concat) -> list:
    """Nodes that may take ``concat``'s scale as their own: for each input, the rescaling node
    or concatenation reached backwards through range-only ops, when only the path to ``concat``
    reads each tensor on the way (concatenations recursively)."""
    by_name, readers = {node.name: node for node in nodes}, _readers(nodes)
    found = []
    for name in dict.fromkeys(concat.inputs):
        while name in by_name and by_name[name].kind in RANGE_ONLY and \
                len(readers[name]) == 1:
            name = by_name[name].inputs[0]
        node = by_name.get(name)
        if node is None or len(readers[name]) != 1 or node.name == nodes[-1].name:
            continue
        if node.kind in RESCALING:
            found.append(node.name)
        elif node.kind == "concat":
            found += [node.name] + concat_sources(nodes, node)
    return found


def _found(bad: np.ndarray, name: str, what: str) -> str:
    """``"found 2 NaN (first at weight[0, 0, 1, 2])"``: ``what`` and where the entries ``bad``
    of parameter ``name`` are."""
    index = ", ".join(str(int(i)) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
    return f"found {what} ({'at' if bad.sum() == 1 else 'first at'} {name}[{index}])"


def _not_finite(values: np.ndarray, name: str) -> str | None:
    """None if ``values`` are all finite, else the message tail ``"must be finite, found ..."``."""
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    if not nan and not inf:
        return None
    counts = [f"{nan} NaN"] * bool(nan) + [f"{inf} infinite value{'s' * (inf > 1)}"] * bool(inf)
    return "must be finite, " + _found(~np.isfinite(values), name, " and ".join(counts))


def check_finite(nodes: list) -> None:
    """Refuse a float graph (before BatchNorm folding) with a NaN or infinite parameter, or a
    negative BatchNorm variance.

    The `QuantizationError` names the layer (for BatchNorm, the convolution it folds into), the
    PyTorch module path and the parameter by its PyTorch name, e.g. ``layer 'features.0'
    (module features.1): running_var must be finite, found 1 NaN (at running_var[3])``.
    """
    prev = None
    for node in nodes:
        layer = prev.name if node.kind == "bn" and prev is not None and prev.kind == "conv" \
            else node.name
        names = PARAM_NAMES.get(node.kind, {})
        for key, values in node.params.items():
            name = names.get(key, key)
            problem = _not_finite(values, name)
            if problem is None and node.kind == "bn" and key == "var" and np.any(values < 0):
                problem = "must be >= 0, " + _found(values < 0, name,
                                                    f"{int((values < 0).sum())} negative")
            if problem:
                raise QuantizationError(f"layer '{layer}' (module {node.name}): {name} {problem}")
        prev = node


def check_folded(nodes: list) -> None:
    """Refuse convolution parameters that BatchNorm folding made infinite or NaN (finite
    parameters can overflow it, e.g. a zero variance with ``eps=0``)."""
    for node in nodes:
        for key, values in node.params.items():
            problem = _not_finite(values, key)
            if problem:
                raise QuantizationError(f"layer '{node.name}' (module {', '.join(node.sources)})"
                                        f": {key} after BatchNorm folding {problem}")


def tap_means(node, x: np.ndarray) -> np.ndarray:
    """``C x KH x KW``: the mean of the float input each weight of ``node`` (a convolution or
    linear layer) multiplies, over the calibration inputs ``x`` and the output positions,
    padding read as zeros."""
    if node.kind == "linear":
        return x.reshape(len(x), -1).mean(axis=0)[:, None, None]
    c, h, w = map_shape(node.in_shape)
    kh, kw = node.params["weight"].shape[2:]
    (sh, sw), (ph, pw) = node.attrs.get("stride", (1, 1)), node.attrs.get("padding", (0, 0))
    eh, ew = node.attrs.get("pad_extra", (0, 0))
    xp = np.pad(x.reshape(len(x), c, h, w), ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)))
    oh, ow = out_size(h + eh, kh, sh, ph), out_size(w + ew, kw, sw, pw)
    means = np.empty((c, kh, kw))
    for ky in range(kh):
        for kx in range(kw):
            means[:, ky, kx] = xp[:, :, ky:ky + sh * (oh - 1) + 1:sh,
                                  kx:kx + sw * (ow - 1) + 1:sw].mean(axis=(0, 2, 3))
    return means


def _quantize_weights(node, layer_name: str, s_in: float, s_out: float, in_range: tuple,
                      means: np.ndarray | None = None):
    """int8 weights, int32 bias, multipliers and shifts of ``node``; with ``means``
    (`tap_means`) the bias is corrected for the weights' rounding (module docstring)."""
    w = node.params["weight"]
    if node.kind == "linear":
        w = w.reshape(*w.shape, 1, 1)
    o = w.shape[0]
    w_max = np.abs(w.reshape(o, -1)).max(axis=1)
    s_w = np.where(w_max > 0, w_max / numerics.WEIGHT_MAX, 1.0)
    # The bias is stored at scale s_in * s_w. A channel whose bias outweighs its weights' whole
    # contribution by more than int32 holds (tiny weights, or an input scaled far below the
    # bias) gets coarser weights instead, so its bias fits BIAS_MAX: the weights' error then
    # stays below K * |bias| * 2**-31 in real units, far under the output's step.
    s_w = np.maximum(s_w, np.abs(node.params["bias"]) / (s_in * BIAS_MAX))
    wq = numerics.quantize(w / s_w[:, None, None, None], 1.0, -numerics.WEIGHT_MAX,
                           numerics.WEIGHT_MAX)
    bias = node.params["bias"]
    if means is not None:           # the mean the rounded weights add, taken back out
        error = wq * s_w[:, None, None, None] - w
        bias = bias - np.einsum("ocyx,cyx->o", error, means)
    bias_real = bias / (s_in * s_w)
    if not np.all(np.abs(bias_real) < 2 ** 31 - 1):
        c = int(np.argmax(np.abs(bias_real)))
        raise QuantizationError(f"layer '{layer_name}': bias of channel {c} must fit int32 at "
                                f"scale s_in * s_w, not {bias_real[c]:.6g}")
    bq = np.floor(bias_real + 0.5).astype(np.int64)
    mults, shifts = [], []
    for c in range(o):
        try:
            m, s = numerics.requant_multiplier(s_in * s_w[c] / s_out)
        except QuantizationError as exc:
            raise QuantizationError(f"layer '{layer_name}', channel {c}: {exc}") from None
        mults.append(m)
        shifts.append(s)
    # one group's inputs at the kernel's taps (a dilated kernel is zero between them)
    fan_in = wq.shape[1] // node.attrs.get("groups", 1) * \
        kernel_taps(wq.shape[2:], node.attrs.get("dilation", (1, 1)))
    bound = numerics.accumulator_bound(fan_in, np.abs(wq.reshape(o, -1)).max(axis=1),
                                       numerics.max_abs_of_range(*in_range), np.abs(bq))
    if not numerics.fits_accumulator(bound).all():
        c = int(np.argmax(bound))
        raise QuantizationError(
            f"layer '{layer_name}': int32 accumulator may overflow on channel {c}: "
            f"K * max|w| * max|x| + |bias| = {bound[c]} must be < 2**31")
    return wq, bq.astype(np.int32), np.array(mults, np.int64), np.array(shifts, np.int64)


def _ceil_padding(node, common: dict, scale: float, rng: tuple, layers: list,
                  tensors: dict) -> dict:
    """For a ``ceil_mode=True`` max pool: append a zero padding layer ``<pool>.ceil`` of the
    rows and columns its last windows reach past the map, and return the pool's fields reading
    it. Exact when the input is never negative (a ReLU before it): each window holds a value of
    the map (PyTorch's rule), so the zeros never win the maximum, as PyTorch's -inf would not."""
    if rng[0] < 0:
        raise UnsupportedLayerError(
            f"max pooling at '{node.name}' is not supported: ceil_mode=True needs a "
            "non-negative input (a ReLU before it)")
    eh, ew = node.attrs["extra"]
    c, h, w = common["in_shape"]
    padded = (c, h + eh, w + ew)
    pad = _padding((0, eh, 0, ew), scale,
                   {**common, "name": f"{node.name}.ceil", "out_shape": padded})
    layers.append(pad)
    tensors[pad.name] = (scale, rng)
    return {**common, "in_shape": padded, "inputs": (pad.name,)}


def _padding(pads: tuple, scale: float, common: dict) -> QLayer:
    """Zero padding ``(top, bottom, left, right)`` as a copy: a convolution with symmetric
    padding ``P = max`` of each axis and one unit weight per channel at ``P - top`` /
    ``P - left`` of a ``2P - top - bottom + 1`` (by width alike) kernel, so output pixel
    ``(y, x)`` is input pixel ``(y - top, x - left)``, or 0 outside the input."""
    top, bottom, left, right = pads
    ph, pw = max(top, bottom), max(left, right)
    kh, kw = 2 * ph - top - bottom + 1, 2 * pw - left - right + 1
    c = common["in_shape"][0]
    weight = np.zeros((c, c, kh, kw), np.int8)
    weight[np.arange(c), np.arange(c), ph - top, pw - left] = 1
    return copy_conv(QLayer(op="pool", out_scale=scale, **common), weight, (ph, pw))


def _rescaled(name: str, shape: tuple, s_in: float, s_out: float, index: int, concat) -> QLayer:
    """A 1x1 identity convolution that requantizes tensor ``name`` from ``s_in`` to ``s_out``:
    the copy a concatenation input needs when its producer cannot take the concatenation's
    scale."""
    try:
        mult, shift = numerics.requant_multiplier(s_in / s_out)
    except QuantizationError as exc:
        raise QuantizationError(f"layer '{concat.name}': {exc}") from None
    layer = QLayer(name=f"{concat.name}.rescale{index}", op="pool", in_shape=shape,
                   out_shape=shape, out_scale=s_out, sources=concat.sources, inputs=(name,))
    return identity_conv(layer, shape[0], mult, shift)


def quantize_graph(nodes: list, calibration: np.ndarray, input_shape: tuple,
                   method: str = "minmax") -> QGraph:
    """Quantize a BatchNorm-folded float DAG into an unfused integer graph, calibrating by
    ``method`` (`CALIBRATION_METHODS`)."""
    outs = float_tensors(nodes, calibration)
    s_in, scales = calibrate(nodes, calibration, method, outs)
    full = (numerics.INT8_MIN, numerics.INT8_MAX)
    tensors = {INPUT: (s_in, full)}         # tensor name -> (scale, range of its values)
    layers = []
    for node in nodes:
        scale, rng = tensors[node.inputs[0]]
        common = dict(name=node.name, in_shape=map_shape(node.in_shape),
                      out_shape=map_shape(node.out_shape), sources=node.sources,
                      inputs=node.inputs)
        out_rng = full
        if node.kind in ("conv", "linear"):
            wq, bq, mult, shift = _quantize_weights(node, node.name, scale, scales[node.name],
                                                    rng, tap_means(node, outs[node.inputs[0]]))
            a = node.attrs
            layer = QLayer(op="conv", out_scale=scales[node.name], weight=wq, bias=bq,
                           mult=mult, shift=shift, groups=a.get("groups", 1),
                           dilation=a.get("dilation", (1, 1)),
                           stride=a.get("stride", (1, 1)),
                           padding=a.get("padding", (0, 0)),
                           pad_extra=a.get("pad_extra", (0, 0)), **common)
        elif node.kind == "relu":
            layer = QLayer(op="pool", out_scale=scale, lo=0, **common)
        elif node.kind == "relu6":
            six = int(numerics.quantize(6.0, scale)[()])
            layer = QLayer(op="pool", out_scale=scale, lo=0, hi=six, **common)
        elif node.kind == "table":
            a = node.attrs
            lut = tables.table(a["function"], a["options"], scale, scales[node.name])
            layer = QLayer(op="pool", out_scale=scales[node.name], table=lut, **common)
            out_rng = (int(lut.min()), int(lut.max()))
        elif node.kind in ("maxpool", "avgpool"):
            a = node.attrs
            mult, shift, out_scale = 0, 0, scale
            if "extra" in a:
                common = _ceil_padding(node, common, scale, rng, layers, tensors)
            if node.kind == "avgpool":
                out_scale = scales[node.name]
                area = a["kernel"][0] * a["kernel"][1]
                try:
                    mult, shift = numerics.requant_multiplier(scale / (area * out_scale))
                except QuantizationError as exc:
                    raise QuantizationError(f"layer '{node.name}': {exc}") from None
            layer = QLayer(op="pool", out_scale=out_scale, pool=node.kind[:3],
                           pool_kernel=a["kernel"], pool_stride=a["stride"],
                           pool_padding=a["padding"], pool_mult=mult, pool_shift=shift, **common)
        elif node.kind == "pad":
            layer = _padding(node.attrs["pads"], scale, common)
            out_rng = rng
        elif node.kind == "upsample":      # a copy of each value to a block of pixels
            layer = QLayer(op="pool", out_scale=scale, upsample=node.attrs["factor"], **common)
            out_rng = rng
        elif node.kind == "flatten":
            layer = QLayer(op="flatten", out_scale=scale, **common)
            out_rng = rng
        elif node.kind == "add":
            (s_a, _), (s_b, _) = (tensors[name] for name in node.inputs)
            # An output calibrated far narrower than the inputs (they cancel, or a ReLU after
            # the add keeps little of them) gets the finest scale the add's multipliers reach.
            s_out = max(scales[node.name], max(s_a, s_b) / numerics.ADD_RATIO_SAFE)
            try:
                m_a, m_b, shift = numerics.add_multipliers(s_a / s_out, s_b / s_out)
            except QuantizationError as exc:
                raise QuantizationError(f"layer '{node.name}': {exc}") from None
            layer = QLayer(op="add", out_scale=s_out, add_mult=(m_a, m_b), add_shift=shift,
                           **common)
        elif node.kind == "concat":
            s_out, inputs = scales[node.name], []
            for i, name in enumerate(node.inputs):
                if tensors[name][0] != s_out:
                    copy = _rescaled(name, map_shape(_shape_of(nodes, name, input_shape)),
                                     tensors[name][0], s_out, i, node)
                    layers.append(copy)
                    tensors[copy.name] = (s_out, full)
                    name = copy.name
                inputs.append(name)
            common["inputs"] = tuple(inputs)
            layer = QLayer(op="concat", out_scale=s_out, **common)
            ranges = [tensors[name][1] for name in inputs]
            out_rng = (min(r[0] for r in ranges), max(r[1] for r in ranges))
        else:
            raise QuantizationError(f"layer '{node.name}': {node.kind!r} must be folded before "
                                    "quantization")
        if layer.op == "pool" and layer.pool != "avg" and layer.table is None:
            # clamps and max pooling keep values
            out_rng = (max(rng[0], layer.lo), min(rng[1], layer.hi))
        tensors[node.name] = (layer.out_scale, out_rng)
        layers.append(layer)
    output_shape = tuple(nodes[-1].out_shape) if nodes else tuple(input_shape)
    return QGraph(layers=tuple(layers), input_shape=tuple(input_shape), input_scale=s_in,
                  output_shape=output_shape, output=nodes[-1].name if nodes else "")


def _shape_of(nodes: list, name: str, input_shape: tuple) -> tuple:
    return tuple(input_shape) if name == INPUT else next(n.out_shape for n in nodes
                                                         if n.name == name)
