"""Trace a PyTorch `nn.Module` into a float graph: a DAG of `FloatNode` with shapes.

Supported: Conv2d, BatchNorm2d, ReLU, ReLU6, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten
(module, ``torch.flatten``, ``.flatten``, ``.view``/``.reshape`` to ``(N, -1)``), Linear,
BatchNorm1d on vectors, and in eval mode the no-ops Dropout and Identity; the functional forms
of ReLU, ReLU6, pooling and dropout too; residual adds of two tensors of one shape (``x + y``,
``torch.add``, ``.add``, ``+=``, in-place forms) and ``torch.cat`` along channels. A tensor may
feed any number of ops. Inputs are ``N x C x H x W`` images, ``N x C x L`` signals or ``N x F``
vectors. On signals: Conv1d, BatchNorm1d, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d(1) and their
functional forms, each lowered to its 2-D form on a ``C x 1 x L`` map (kernel ``1 x k``); node
shapes keep the signal's ``C x L``. Anything else raises `UnsupportedLayerError` naming the op and
its module path. `check_input_rank` finds such an op without shapes, for inputs of another rank.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedLayerError
from ..ir.graph import INPUT
from ..ir.kernels import out_size
from ..ir import tables

KINDS = ("conv", "bn", "relu", "relu6", "maxpool", "avgpool", "flatten", "linear", "add",
         "concat", "pad", "table", "upsample")


@dataclass(frozen=True, eq=False)
class FloatNode:
    """One float op. ``params`` hold float64 arrays; ``attrs`` plain values; shapes exclude N
    (``in_shape`` is the first input's). ``inputs`` name the tensors it reads: `INPUT` or
    earlier nodes' names; a node's own tensor has its name."""

    kind: str
    name: str
    in_shape: tuple
    out_shape: tuple
    params: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    sources: tuple = ()
    inputs: tuple = ()

    def replace(self, **changes) -> "FloatNode":
        return dataclasses.replace(self, **changes)


def _pair(v) -> tuple:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)


def _unsupported(what: str, path: str, why: str = "") -> UnsupportedLayerError:
    detail = f": {why}" if why else ""
    return UnsupportedLayerError(f"{what} at '{path}' is not supported{detail}")


def _arr(t) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def _planar(values, one_d: bool, fill: int) -> tuple:
    """A 1-D layer's kernel, stride or padding as its 2-D form on a ``C x 1 x L`` map (``fill``
    along the height); a 2-D layer's as a pair."""
    if one_d:
        return (fill, int(values if isinstance(values, int) else values[0]))
    return _pair(values)


def _map(shape: tuple) -> tuple:
    """A node shape as the map the 2-D kernels see: ``C x L`` signals as ``C x 1 x L``."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def _unmap(shape: tuple, one_d: bool) -> tuple:
    return (shape[0], shape[2]) if one_d else tuple(shape)


def _conv_node(m, path, shape):
    kind, one_d = type(m).__name__, isinstance(m, nn.Conv1d)
    if m.padding_mode != "zeros":
        raise _unsupported(kind, path, f"padding_mode must be 'zeros', not {m.padding_mode!r}")
    dilation = _planar(m.dilation, one_d, 1)
    # A dilated kernel is the dense kernel of its span with zeros between the taps.
    kh, kw = (d * (k - 1) + 1 for d, k in zip(dilation, _planar(m.kernel_size, one_d, 1)))
    stride = _planar(m.stride, one_d, 1)
    if m.padding == "valid":
        padding = (0, 0)
    elif m.padding == "same":
        if stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
            raise _unsupported(kind, path, "padding='same' needs stride 1 and odd kernels")
        padding = (kh // 2, kw // 2)
    else:
        padding = _planar(m.padding, one_d, 0)
    if len(shape) != 2 + (not one_d) or shape[0] != m.in_channels:
        dims = "L" if one_d else "H x W"
        raise _unsupported(kind, path, f"expects {m.in_channels} x {dims} input, not {shape}")
    _, h, w = _map(shape)
    oh, ow = out_size(h, kh, stride[0], padding[0]), out_size(w, kw, stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise _unsupported(kind, path, f"kernel {kh}x{kw} does not fit a {h}x{w} map")
    bias = _arr(m.bias) if m.bias is not None else np.zeros(m.out_channels)
    taps = _arr(m.weight).reshape((m.out_channels, -1) + _planar(m.kernel_size, one_d, 1))
    weight = block_diagonal(dilate(taps, dilation), m.groups)
    attrs = {"stride": stride, "padding": padding}
    if m.groups > 1:
        attrs["groups"] = m.groups
    if dilation != (1, 1):
        attrs["dilation"] = dilation
    return FloatNode("conv", path, shape, _unmap((m.out_channels, oh, ow), one_d),
                     {"weight": weight, "bias": bias}, attrs, (path,))


def dilate(weight: np.ndarray, dilation: tuple) -> np.ndarray:
    """``O x C x KH x KW`` weights of a convolution dilated by ``(dh, dw)`` as the weights of
    the dense convolution over the kernel's span that computes the same: zero between taps."""
    if dilation == (1, 1):
        return weight
    (dh, dw), (kh, kw) = dilation, weight.shape[2:]
    dense = np.zeros(weight.shape[:2] + (dh * (kh - 1) + 1, dw * (kw - 1) + 1), weight.dtype)
    dense[:, :, ::dh, ::dw] = weight
    return dense


def block_diagonal(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's ``O x C/groups x KH x KW`` weights as the ``O x C x KH x KW``
    weights of the dense convolution that computes the same: zero across groups."""
    if groups == 1:
        return weight
    o, cg = weight.shape[:2]
    og = o // groups
    dense = np.zeros((o, cg * groups) + weight.shape[2:], weight.dtype)
    for g in range(groups):
        dense[g * og:(g + 1) * og, g * cg:(g + 1) * cg] = weight[g * og:(g + 1) * og]
    return dense


def _ceil_extra(size: int, kernel: int, stride: int, padding: int) -> int:
    """Rows (or columns) past the padded input that ``ceil_mode=True`` windows reach: PyTorch
    rounds the output count up, but drops a last window that would start in the right
    padding."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return max(0, (out - 1) * stride + kernel - (size + 2 * padding))


def _pool_node(kind, path, shape, kernel, stride, padding, ceil_mode=False):
    one_d = "1d" in kind
    kernel = _planar(kernel, one_d, 1)
    stride = _planar(stride if stride not in (None, ()) else kernel[one_d:], one_d, 1)
    padding = _planar(padding, one_d, 0)
    if len(shape) != 2 + (not one_d):
        raise _unsupported(kind, path, f"expects a {'C x L' if one_d else 'C x H x W'} input, "
                                       f"not {shape}")
    shape = _map(shape)
    if any(p > k // 2 for p, k in zip(padding, kernel)):   # PyTorch refuses to run these
        raise _unsupported(kind, path, f"padding must be at most half the "
                                       f"{kernel[0]}x{kernel[1]} window, not "
                                       f"{padding[0]}x{padding[1]}")
    extra = tuple(_ceil_extra(n, k, s, p) if ceil_mode else 0
                  for n, k, s, p in zip(shape[1:], kernel, stride, padding))
    oh = out_size(shape[1] + extra[0], kernel[0], stride[0], padding[0])
    ow = out_size(shape[2] + extra[1], kernel[1], stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise _unsupported(kind, path, f"window {kernel} does not fit a {shape[1]}x{shape[2]} map")
    name = "maxpool" if kind.lower().startswith("max") else "avgpool"
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    if any(extra):      # ceil_mode windows past the map: bottom and right
        attrs["extra"] = extra
    return FloatNode(name, path, _unmap(shape, one_d), _unmap((shape[0], oh, ow), one_d), {},
                     attrs, (path,))


def _check_pool_options(kind, path, ceil_mode=False, dilation=1, count_include_pad=True,
                        divisor_override=None, return_indices=False, padding=0):
    if ceil_mode and not kind.lower().startswith("max"):
        raise _unsupported(kind, path, "ceil_mode=True (supported for max pooling only)")
    if _pair(dilation) != (1, 1):
        raise _unsupported(kind, path, f"dilation must be 1, not {dilation}")
    if divisor_override is not None:
        raise _unsupported(kind, path, "divisor_override")
    if return_indices:
        raise _unsupported(kind, path, "return_indices=True")
    if not count_include_pad and _pair(padding) != (0, 0):
        raise _unsupported(kind, path, "count_include_pad=False with padding")


def _adaptive(path, shape, output_size, one_d: bool = False):
    kind = f"AdaptiveAvgPool{1 if one_d else 2}d"
    if output_size not in ((1, (1,), [1]) if one_d else (1, (1, 1), [1, 1])):
        raise _unsupported(kind, path, f"output_size must be 1, not {output_size!r}")
    if len(shape) != 2 + (not one_d):
        raise _unsupported(kind, path, f"expects a {'C x L' if one_d else 'C x H x W'} input, "
                                       f"not {shape}")
    window = shape[1:] if not one_d else shape[1]
    return _pool_node(f"AvgPool{1 if one_d else 2}d", path, shape, window, window, 0)


def _pad_node(kind, path, shape, pads, mode="constant", value=0.0):
    """Zero padding: ``pads`` as PyTorch orders them (last dimension first: left, right, then
    top, bottom). Node attribute ``pads`` is ``(top, bottom, left, right)`` on the map."""
    if mode != "constant" or value not in (None, 0, 0.0):
        why = f"mode must be 'constant', not {mode!r}" if mode != "constant" else \
            f"the padding value must be 0, not {value!r}"
        raise _unsupported(kind, path, why)
    pads = [int(p) for p in pads]
    if len(shape) not in (2, 3) or len(pads) not in (2, 4) or len(pads) // 2 > len(shape) - 1:
        raise _unsupported(kind, path, f"pads {pads} must pad the width (and height) of a "
                                       f"C x L signal or C x H x W map, not shape {shape}")
    if min(pads) < 0:
        raise _unsupported(kind, path, f"pads {pads} must be >= 0 (no cropping)")
    left, right, top, bottom = (pads + [0, 0])[:4]
    if len(shape) == 2 and (top or bottom):
        raise _unsupported(kind, path, f"pads {pads} must pad only the length of a signal")
    c, h, w = _map(shape)
    out = _unmap((c, h + top + bottom, w + left + right), len(shape) == 2)
    return FloatNode("pad", path, shape, out, {}, {"pads": (top, bottom, left, right)}, (path,))


def _pad_module(m, path, shape):
    kind = type(m).__name__
    pads = list(m.padding) if isinstance(m.padding, (tuple, list)) else \
        [m.padding] * (2 if kind.endswith("1d") else 4)
    return _pad_node(kind, path, shape, pads, "constant", getattr(m, "value", 0.0))


def _pad_fn(node, path, shape):
    a = _call_args(node, {"pad": None, "mode": "constant", "value": None})
    return _pad_node("pad", path, shape, a["pad"], a["mode"], a["value"])


def _upsample(kind, path, shape, size=None, scale_factor=None, mode="nearest",
              align_corners=None, recompute_scale_factor=None, antialias=False):
    """Nearest-neighbour upsampling of a map or signal by whole factors (``scale_factor``, or a
    ``size`` that is a whole multiple of the input's)."""
    if mode != "nearest":
        raise _unsupported(kind, path, f"mode must be 'nearest', not {mode!r}")
    if antialias:
        raise _unsupported(kind, path, "antialias must be False")
    if len(shape) not in (2, 3):
        raise _unsupported(kind, path, f"expects a C x H x W map or C x L signal, not {shape}")
    dims = tuple(shape[1:])
    if (size is None) == (scale_factor is None):
        raise _unsupported(kind, path, "needs exactly one of size and scale_factor")
    if size is not None:
        sizes = (size,) * len(dims) if isinstance(size, int) else tuple(size)
        factors = tuple(o / i for o, i in zip(sizes, dims))
    else:
        factors = (scale_factor,) * len(dims) if isinstance(scale_factor, (int, float)) \
            else tuple(scale_factor)
    if len(factors) != len(dims) or not all(float(f).is_integer() and f >= 1 for f in factors):
        raise _unsupported(kind, path, f"factors must be whole numbers >= 1, not {factors}")
    factors = tuple(int(f) for f in factors)
    factor = (1, factors[0]) if len(dims) == 1 else factors
    out = (shape[0],) + tuple(n * f for n, f in zip(dims, factors))
    return FloatNode("upsample", path, shape, out, attrs={"factor": factor}, sources=(path,))


def _upsample_module(m, path, shape):
    return _upsample(type(m).__name__, path, shape, m.size, m.scale_factor, m.mode,
                     getattr(m, "align_corners", None))


def _interpolate_fn(node, path, shape):
    a = _call_args(node, {"size": None, "scale_factor": None, "mode": "nearest",
                          "align_corners": None, "recompute_scale_factor": None,
                          "antialias": False})
    return _upsample("interpolate", path, shape, **a)


def _flatten(path, shape, start_dim=1, end_dim=-1):
    if start_dim != 1 or end_dim != -1:
        raise _unsupported("Flatten", path, f"only flatten(start_dim=1, end_dim=-1), not "
                                            f"({start_dim}, {end_dim})")
    return FloatNode("flatten", path, shape, (int(np.prod(shape)),), sources=(path,))


def _act(kind, path, shape):
    return FloatNode(kind, path, shape, shape, sources=(path,))


def _table(function, path, shape, **options):
    """An element-wise function computed by table (`striate.sw.ir.tables`); ReLU and ReLU6
    written as a ``hardtanh`` stay clamps."""
    options = {name: options[name] for name in tables.FUNCTIONS[function][1]}
    if function == "hardtanh":
        bounds = (float(options["min_val"]), float(options["max_val"]))
        if bounds == (0.0, 6.0):
            return _act("relu6", path, shape)
        if not bounds[0] < bounds[1]:
            raise _unsupported("Hardtanh", path, f"min_val must be below max_val, not "
                                                 f"{bounds[0]} and {bounds[1]}")
    for name, value in options.items():
        if name != "approximate" and not np.isfinite(float(value)):
            raise _unsupported(function, path, f"{name} must be finite, not {value}")
    if options.get("approximate", "none") not in ("none", "tanh"):
        raise _unsupported(function, path, f"approximate must be 'none' or 'tanh', not "
                                           f"{options['approximate']!r}")
    options = {k: v if k == "approximate" else float(v) for k, v in options.items()}
    return FloatNode("table", path, shape, shape, attrs={"function": function,
                                                         "options": options}, sources=(path,))


#: Modules computed by table -> (function name, the module's option attributes).
TABLE_MODULES = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Hardtanh: "hardtanh",
                 nn.Hardsigmoid: "hardsigmoid", nn.Hardswish: "hardswish", nn.SiLU: "silu",
                 nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu", nn.ELU: "elu"}


def _table_module(m, path, shape):
    function = TABLE_MODULES[type(m)]
    return _table(function, path, shape, **{name: getattr(m, name)
                                            for name in tables.FUNCTIONS[function][1]})


def _table_call(function, defaults=None):
    """The builder of a functional form of ``function`` whose options after the tensor are
    ``defaults`` (name -> default, in order)."""
    def build(node, path, shape, *_):
        args = _call_args(node, dict(defaults or {}, inplace=False))
        return _table(function, path, shape, **args)
    return build


def _no_op(*_):
    return None


def _bn_node(m, path, shape):
    kind = type(m).__name__
    if not m.track_running_stats or m.running_mean is None:
        raise _unsupported(kind, path, "needs running statistics")
    c = m.num_features
    want = f"{c} x H x W maps" if isinstance(m, nn.BatchNorm2d) else \
        f"vectors of {c} features or {c} x L signals"
    if len(shape) not in ((3,) if isinstance(m, nn.BatchNorm2d) else (1, 2)) or shape[0] != c:
        raise _unsupported(kind, path, f"expects {want}, not shape {shape}")
    weight = _arr(m.weight) if m.affine else np.ones(c)
    bias = _arr(m.bias) if m.affine else np.zeros(c)
    return FloatNode("bn", path, shape, shape,
                     {"gamma": weight, "beta": bias, "mean": _arr(m.running_mean),
                      "var": _arr(m.running_var)}, {"eps": float(m.eps)}, (path,))


# The PyTorch names of the float nodes' parameters, where they differ (for error messages).
PARAM_NAMES = {"bn": {"gamma": "weight", "beta": "bias", "mean": "running_mean",
                      "var": "running_var"}}


def _maxpool_module(m, path, shape):
    kind = type(m).__name__
    _check_pool_options(kind, path, m.ceil_mode, m.dilation, return_indices=m.return_indices)
    return _pool_node(kind, path, shape, m.kernel_size, m.stride, m.padding, m.ceil_mode)


def _avgpool_module(m, path, shape):
    kind = type(m).__name__
    _check_pool_options(kind, path, m.ceil_mode, 1, m.count_include_pad,
                        getattr(m, "divisor_override", None), padding=m.padding)
    return _pool_node(kind, path, shape, m.kernel_size, m.stride, m.padding)


def _linear_node(m: nn.Linear, path, shape):
    if len(shape) != 1 or shape[0] != m.in_features:
        raise _unsupported("Linear", path, f"expects a flat input of {m.in_features} features"
                                           f", not shape {shape}")
    bias = _arr(m.bias) if m.bias is not None else np.zeros(m.out_features)
    return FloatNode("linear", path, shape, (m.out_features,),
                     {"weight": _arr(m.weight), "bias": bias}, {}, (path,))


def _module_builder(m: nn.Module):
    """The function ``(module, path, shape) -> FloatNode or None`` that lowers ``m``, or None
    when its type is not supported (decided by type and options that need no shapes)."""
    if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Identity)):
        return _no_op
    if type(m) is nn.ReLU:
        return lambda m, path, shape: _act("relu", path, shape)
    if type(m) is nn.ReLU6:
        return lambda m, path, shape: _act("relu6", path, shape)
    if type(m) in TABLE_MODULES:
        return _table_module
    builders = ((nn.Conv2d, _conv_node), (nn.Conv1d, _conv_node), (nn.BatchNorm2d, _bn_node),
                (nn.BatchNorm1d, _bn_node), (nn.MaxPool2d, _maxpool_module),
                (nn.MaxPool1d, _maxpool_module), (nn.AvgPool2d, _avgpool_module),
                (nn.AvgPool1d, _avgpool_module),
                (nn.AdaptiveAvgPool2d, lambda m, path, shape: _adaptive(path, shape,
                                                                        m.output_size)),
                (nn.AdaptiveAvgPool1d, lambda m, path, shape: _adaptive(path, shape,
                                                                        m.output_size, True)),
                (nn.Flatten, lambda m, path, shape: _flatten(path, shape, m.start_dim,
                                                             m.end_dim)),
                (nn.Linear, _linear_node),
                ((nn.Upsample, nn.UpsamplingNearest2d), _upsample_module),
                ((nn.ZeroPad2d, nn.ZeroPad1d, nn.ConstantPad2d, nn.ConstantPad1d), _pad_module))
    return next((build for cls, build in builders if isinstance(m, cls)), None)


def _unsupported_module(m: nn.Module, path: str) -> UnsupportedLayerError:
    name = type(m).__name__
    if name.endswith("3d"):
        return _unsupported(name, path, "3-D layers are not supported yet, only 2-D ones on "
                                        "N x C x H x W inputs and 1-D ones on N x C x L inputs")
    return _unsupported(name, path)


def _module_node(m: nn.Module, path: str, shape):
    """Lower one leaf module; None for an eval-mode no-op."""
    build = _module_builder(m)
    if build is None:
        raise _unsupported_module(m, path)
    return build(m, path, shape)


def _call_args(node, names_defaults):
    """Bind a functional call's args/kwargs (after the tensor) to named values."""
    values = dict(names_defaults)
    names = list(names_defaults)
    for name, value in zip(names, node.args[1:]):
        values[name] = value
    values.update({k: v for k, v in node.kwargs.items()})
    return values


def _dropout_fn(node, path, shape):
    if _call_args(node, {"p": 0.5, "training": False, "inplace": False})["training"]:
        raise _unsupported("dropout", path, "training=True at trace time")
    return None


def _max_pool_fn(node, path, shape, kind="max_pool2d"):
    a = _call_args(node, {"kernel_size": None, "stride": None, "padding": 0, "dilation": 1,
                          "ceil_mode": False, "return_indices": False})
    _check_pool_options(kind, path, a["ceil_mode"], a["dilation"],
                        return_indices=a["return_indices"])
    return _pool_node(kind, path, shape, a["kernel_size"], a["stride"], a["padding"],
                      a["ceil_mode"])


def _avg_pool_fn(node, path, shape, kind="avg_pool2d"):
    defaults = {"kernel_size": None, "stride": None, "padding": 0, "ceil_mode": False,
                "count_include_pad": True}
    if kind == "avg_pool2d":
        defaults["divisor_override"] = None
    a = _call_args(node, defaults)
    _check_pool_options(kind, path, a["ceil_mode"], 1, a["count_include_pad"],
                        a.get("divisor_override"), padding=a["padding"])
    return _pool_node(kind, path, shape, a["kernel_size"], a["stride"], a["padding"])


def _flatten_call(node, path, shape, *_):
    a = _call_args(node, {"start_dim": 0, "end_dim": -1})
    return _flatten(path, shape, a["start_dim"], a["end_dim"])


def _relu_call(node, path, shape, *_):
    return _act("relu", path, shape)


FUNCTIONS = {   # supported functions -> builder (node, path, shape)
    F.relu: _relu_call, torch.relu: _relu_call,
    F.relu6: lambda node, path, shape: _act("relu6", path, shape),
    F.dropout: _dropout_fn, F.dropout2d: _dropout_fn, torch.dropout: _dropout_fn,
    F.max_pool2d: _max_pool_fn, torch.max_pool2d: _max_pool_fn,
    F.avg_pool2d: _avg_pool_fn, torch._C._nn.avg_pool2d: _avg_pool_fn,
    F.adaptive_avg_pool2d: lambda node, path, shape: _adaptive(
        path, shape, _call_args(node, {"output_size": None})["output_size"]),
    F.max_pool1d: lambda node, path, shape: _max_pool_fn(node, path, shape, "max_pool1d"),
    torch.max_pool1d: lambda node, path, shape: _max_pool_fn(node, path, shape, "max_pool1d"),
    F.avg_pool1d: lambda node, path, shape: _avg_pool_fn(node, path, shape, "avg_pool1d"),
    torch.avg_pool1d: lambda node, path, shape: _avg_pool_fn(node, path, shape, "avg_pool1d"),
    F.adaptive_avg_pool1d: lambda node, path, shape: _adaptive(
        path, shape, _call_args(node, {"output_size": None})["output_size"], True),
    torch.flatten: _flatten_call,
    F.pad: _pad_fn, F.interpolate: _interpolate_fn,
    torch.tanh: _table_call("tanh"), torch.sigmoid: _table_call("sigmoid"),
    torch.special.expit: _table_call("sigmoid"),
    F.hardtanh: _table_call("hardtanh", {"min_val": -1.0, "max_val": 1.0}),
    F.hardsigmoid: _table_call("hardsigmoid"), F.hardswish: _table_call("hardswish"),
    F.silu: _table_call("silu"), F.leaky_relu: _table_call("leaky_relu",
                                                            {"negative_slope": 0.01}),
    F.gelu: _table_call("gelu", {"approximate": "none"}),
    F.elu: _table_call("elu", {"alpha": 1.0}),
}


def _function_node(node, path, shape):
    build = FUNCTIONS.get(node.target)
    if build is None:
        raise _unsupported(getattr(node.target, "__name__", str(node.target)), path)
    return build(node, path, shape)


def _view_method(node, path, shape, shape_nodes):
    dims = node.args[1:]
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    batch_ok = len(dims) == 2 and (dims[0] in (-1,) or dims[0] in shape_nodes)
    flat = int(np.prod(shape))
    if batch_ok and dims[1] in (-1, flat):
        return _flatten(path, shape)
    raise _unsupported(f".{node.target}", path, "only .view(N, -1) / .reshape(N, -1) flattening")


METHODS = {   # supported tensor methods -> builder (node, path, shape, shape_nodes)
    "relu": _relu_call, "relu_": _relu_call, "contiguous": _no_op, "clone": _no_op,
    "tanh": _table_call("tanh"), "tanh_": _table_call("tanh"),
    "sigmoid": _table_call("sigmoid"), "sigmoid_": _table_call("sigmoid"),
    "flatten": _flatten_call, "view": _view_method, "reshape": _view_method,
}


ADDS = (operator.add, operator.iadd, torch.add)      # adds of two tensors
ADD_METHODS = ("add", "add_")
CATS = (torch.cat, torch.concat, torch.concatenate)


def _method_node(node, path, shape, shape_nodes):
    build = METHODS.get(node.target)
    if build is None:
        raise _unsupported(f".{node.target}", path)
    return build(node, path, shape, shape_nodes)


def _symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise UnsupportedLayerError(
            f"model {type(model).__name__} cannot be traced by torch.fx: {exc}") from exc


def _is_shape_node(node, shape_nodes) -> bool:
    """``x.size()``, ``getattr(x, "shape")`` and indexing into them: batch-size arithmetic."""
    return (node.op == "call_method" and node.target == "size"
            or node.op == "call_function" and node.target is getattr
            or node.op == "call_function" and node.target is operator.getitem
            and node.args[0] in shape_nodes)


def _supported_call(node, modules) -> bool:
    """Whether the compiler has a lowering for ``node``'s op (decided without shapes)."""
    if node.op == "call_module":
        return _module_builder(modules[node.target]) is not None
    if node.op == "call_function":
        return node.target in FUNCTIONS or node.target in ADDS or node.target in CATS
    return node.target in METHODS or node.target in ADD_METHODS


def check_input_rank(model: nn.Module, shape: tuple) -> None:
    """Blame the model, if it is at fault, for calibration data of ``shape`` (with N) that is
    none of ``N x C x H x W``, ``N x C x L`` and ``N x F``.

    Raises `UnsupportedLayerError` naming the first op of ``model`` the compiler does not
    support (e.g. a ``Conv3d``). Returns when the model is fine, so the caller blames the data.
    """
    gm = _symbolic_trace(model)
    modules = dict(gm.named_modules())
    shape_nodes = set()
    for node in gm.graph.nodes:
        if _is_shape_node(node, shape_nodes):
            shape_nodes.add(node)
        elif node.op == "call_module" and not _supported_call(node, modules):
            raise _unsupported_module(modules[node.target], node.target)
        elif node.op in ("call_function", "call_method") and not _supported_call(node, modules):
            raise _unsupported(_op_name(node), node.name)


def _op_name(node) -> str:
    if node.op == "call_method":
        return f".{node.target}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _tensor_args(node, shape_nodes) -> list:
    """The fx nodes among ``node``'s arguments (inside lists too) that carry tensors."""
    found = []
    for arg in list(node.args) + list(node.kwargs.values()):
        items = arg if isinstance(arg, (list, tuple)) else [arg]
        found += [a for a in items if isinstance(a, torch.fx.Node) and a not in shape_nodes]
    return found


def _describe(name: str, shapes: dict) -> str:
    what = "the input" if name == INPUT else f"'{name}'"
    return f"{what} ({' x '.join(map(str, shapes[name]))})"


def _add_node(node, path, names, shapes):
    """``x + y``, ``torch.add(x, y)``, ``x.add(y)`` and in-place forms: two tensors of one
    shape."""
    scalars = [a for a in node.args if not isinstance(a, torch.fx.Node)]
    alpha = node.kwargs.get("alpha", 1)
    if len(names) != 2 or scalars or alpha != 1 or set(node.kwargs) - {"alpha"}:
        detail = (f"alpha must be 1, not {alpha!r}" if alpha != 1 else
                  "only the sum of two tensors is supported (no scalars or broadcasting)")
        raise _unsupported("add", path, detail)
    a, b = names
    if shapes[a] != shapes[b]:
        raise _unsupported("add", path, f"adds {_describe(a, shapes)} and {_describe(b, shapes)}"
                                        ": the shapes must be equal (no broadcasting)")
    return FloatNode("add", path, shapes[a], shapes[a], sources=(path,))


def _cat_node(node, path, names, shapes):
    """``torch.cat`` of tensors along channels (features for vectors)."""
    a = _call_args(node, {"dim": 0})
    parts = [shapes[n] for n in names]
    rank = len(parts[0])
    if a["dim"] not in (1, -rank):
        raise _unsupported("cat", path, f"only concatenation along channels (dim=1) is "
                                        f"supported, not dim={a['dim']!r}")
    if any(len(p) != rank or tuple(p[1:]) != tuple(parts[0][1:]) for p in parts):
        found = ", ".join(_describe(n, shapes) for n in names)
        raise _unsupported("cat", path, f"joins {found}: all but the channels must be equal")
    out = (sum(p[0] for p in parts),) + tuple(parts[0][1:])
    return FloatNode("concat", path, parts[0], out, sources=(path,))


def _mutates(node, modules) -> bool:
    """Whether ``node`` writes its first tensor argument in place (later readers of that
    tensor then see the result, as in PyTorch)."""
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_")
    return node.op == "call_function" and bool(node.kwargs.get("inplace", False))


def trace(model: nn.Module, input_shape: tuple) -> list:
    """Trace ``model`` (in eval mode) into `FloatNode` s for ``C x H x W`` (or ``F``) inputs:
    a DAG in topological order whose last node is the output; nodes the output does not
    depend on are left out."""
    gm = _symbolic_trace(model)
    modules = dict(gm.named_modules())
    nodes, shape_nodes, tensors = [], set(), {}   # tensors: fx node -> tensor name
    shapes, used, output = {INPUT: tuple(input_shape)}, set(), None
    for node in gm.graph.nodes:
        path = node.target if node.op == "call_module" else node.name
        if node.op == "placeholder":
            if tensors:
                raise UnsupportedLayerError(f"model must take one input, found another: '{path}'")
            tensors[node] = INPUT
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node) or result not in tensors:
                raise UnsupportedLayerError("model output must be a single tensor")
            output = tensors[result]
            break
        if _is_shape_node(node, shape_nodes):
            shape_nodes.add(node)
            continue
        if node.op == "get_attr":
            raise _unsupported("parameter access", str(node.target))
        args = _tensor_args(node, shape_nodes)
        names = [tensors[a] for a in args]
        is_add = node.target in ADDS if node.op == "call_function" else \
            node.op == "call_method" and node.target in ADD_METHODS
        if is_add:
            fnode = _add_node(node, path, names, shapes)
        elif node.op == "call_function" and node.target in CATS:
            fnode = _cat_node(node, path, names, shapes)
        else:
            if len(args) != 1:
                raise _unsupported(_op_name(node), path,
                                   f"reads {len(args)} tensors; only adds and torch.cat may "
                                   "read more than one")
            shape = shapes[names[0]]
            if node.op == "call_module":
                fnode = _module_node(modules[node.target], path, shape)
            elif node.op == "call_function":
                fnode = _function_node(node, path, shape)
            else:
                fnode = _method_node(node, path, shape, shape_nodes)
        if fnode is None:                   # a no-op: the tensor passes through
            tensors[node] = names[0]
            continue
        name = _unique(path, used)
        fnode = fnode.replace(name=name, inputs=tuple(names))
        nodes.append(fnode)
        shapes[name] = fnode.out_shape
        tensors[node] = name
        if _mutates(node, modules) and args:
            tensors[args[0]] = name
    return _needed(nodes, output)


def _unique(path: str, used: set) -> str:
    """``path`` for a module's first call, ``path#2``, ``path#3``... for later ones."""
    name, k = path, 1
    while name in used:
        k += 1
        name = f"{path}#{k}"
    used.add(name)
    return name


def _needed(nodes: list, output: str) -> list:
    """The nodes ``output`` depends on, in order (it is then the last)."""
    wanted = {output}
    for node in reversed(nodes):
        if node.name in wanted:
            wanted.update(node.inputs)
    return [node for node in nodes if node.name in wanted]
