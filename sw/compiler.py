"""`compile`: a trained PyTorch model and calibration images -> `Program`.

Pipeline: trace (torch.fx, a DAG) -> fold BatchNorm (float pass) -> calibrate and quantize
(per-channel int8 weights, per-tensor int8 activations, int32 bias, integer requantization,
residual adds and concatenations) -> integer passes (fuse activation, fuse pooling, lower
flatten, lower remaining pools) -> configuration-dependent passes (unfold a thin first layer on
the host, split grouped convolutions into denser parts, place concatenations' inputs in their
output) -> map onto the `AcceleratorConfig`.
"""

from __future__ import annotations

import numpy as np
import torch.nn as nn

from .errors import StriateError
from .arguments import as_array, describe
from .frontend.fold import fold_batchnorm, fold_padding
from .ir.graph import QGraph
from .ir.passes import INTEGER_PASSES
from .mapping.concat import place_concats
from .mapping.grouped import split_grouped
from .mapping.unfold import im2col_input
from .runtime.program import Program, as_config
from .ir.quantize import CALIBRATION_METHODS, check_finite, check_folded, quantize_graph
from .frontend.trace import check_input_rank, trace

FLOAT_PASSES = (fold_batchnorm, fold_padding)


def check_calibration(model, calibration, what: str = "calibration data must be") -> np.ndarray:
    """``calibration`` as a NumPy array: a non-empty ``N x C x H x W`` (images), ``N x C x L``
    (signals) or ``N x F`` (vectors) array of finite real numbers, else `StriateError` starting
    with ``what`` (its subject and verb). A model the compiler cannot take is blamed before data
    of another rank (``N x C x D x H x W`` for a ``Conv3d``)."""
    x = as_array(calibration)
    if x is None:
        raise StriateError(f"{what} an N x C x H x W, N x C x L or N x F array of real numbers, "
                           f"not {describe(calibration)}")
    if x.ndim not in (2, 3, 4):
        check_input_rank(model, x.shape)     # a model the compiler cannot take is at fault first
    if x.ndim not in (2, 3, 4) or x.shape[0] < 1:
        raise StriateError(f"{what} a non-empty N x C x H x W, N x C x L or N x F array, not "
                           f"shape {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise StriateError(f"{what} finite numbers, not {int(np.isnan(x).sum())} NaN and "
                           f"{int(np.isinf(x).sum())} infinities")
    return x


def lower(model, calibration) -> tuple:
    """Trace, check and BatchNorm-fold ``model``; return ``(float_nodes, calibration_array)``."""
    if not isinstance(model, nn.Module):
        raise StriateError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    x = check_calibration(model, calibration)
    was_training = model.training
    model.eval()
    try:
        nodes = trace(model, tuple(x.shape[1:]))
    finally:
        model.train(was_training)
    if not nodes:
        raise StriateError("model has no layers to compile")
    check_finite(nodes)     # before folding, so BatchNorm statistics are named as such
    for float_pass in FLOAT_PASSES:
        nodes = float_pass(nodes)
    check_folded(nodes)
    return nodes, x


def check_method(method) -> str:
    """``method`` if it names one of `CALIBRATION_METHODS`, else `StriateError`."""
    if not isinstance(method, str) or method not in CALIBRATION_METHODS:
        raise StriateError(f"calibration_method must be one of "
                           f"{', '.join(map(repr, CALIBRATION_METHODS))}, not {method!r}")
    return method


def compile_graph(model, calibration, config=None, calibration_method: str = "minmax") -> QGraph:
    """The fused integer graph `compile` maps: traced, BatchNorm-folded, quantized, with the
    integer passes and the configuration's passes (host-side unfold, grouped convolutions
    split, concatenations placed) applied."""
    config = as_config(config)
    method = check_method(calibration_method)
    nodes, x = lower(model, calibration)
    graph = quantize_graph(nodes, x, tuple(x.shape[1:]), method)
    for integer_pass in INTEGER_PASSES:
        graph = integer_pass(graph)
    return place_concats(split_grouped(im2col_input(graph, config), config), config)


def compile(model, calibration, config=None, calibration_method: str = "minmax",
            timing=None, streaming: str = "auto") -> Program:
    """Compile ``model`` for ``config`` (an `AcceleratorConfig` or a dict of its parameters;
    default `AcceleratorConfig()`), calibrating on ``calibration`` (float ``N x C x H x W``
    images, ``N x C x L`` signals or ``N x F`` vectors, torch or NumPy). ``calibration_method``
    sets each tensor's clipping value: ``"minmax"`` (its largest magnitude), ``"percentile"``
    (the 99.99th percentile of magnitudes) or ``"mse"`` (least squared quantization error).

    On a configuration with external memory (``ext_bytes``), a network that does not fit on
    chip is streamed: its tensors and weights live in external memory and its layers run in
    tiles (`striate.sw.mapping.stream`), planned for the memory ``timing`` (a `MemoryTiming`;
    default 100 cycles of latency, 8 bytes a cycle). ``streaming="always"`` streams a network
    that would fit too, ``"never"`` refuses one that does not."""
    config = as_config(config)
    return Program(compile_graph(model, calibration, config, calibration_method), config,
                   timing=timing, streaming=streaming)
