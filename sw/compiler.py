"""`compile`: a trained PyTorch model and calibration images -> `Program`.

Pipeline: trace (torch.fx) -> fold BatchNorm (float pass) -> calibrate and quantize (per-channel
int8 weights, per-tensor int8 activations, int32 bias, integer requantization) -> integer passes
(fuse activation, fuse pooling, lower flatten, lower remaining pools) -> configuration-dependent
passes (unfold a thin first layer on the host) -> map onto the `AcceleratorConfig`.
"""

from __future__ import annotations

import numpy as np

from .config import AcceleratorConfig
from .errors import StriateError
from .passes import INTEGER_PASSES, fold_batchnorm, im2col_input
from .program import Program, _as_numpy
from .quantize import quantize_graph
from .trace import trace

FLOAT_PASSES = (fold_batchnorm,)


def lower(model, calibration) -> tuple:
    """Trace and BatchNorm-fold ``model``; return ``(float_nodes, calibration_array)``."""
    x = _as_numpy(calibration)
    if x.ndim != 4 or x.shape[0] < 1:
        raise StriateError(f"calibration data must be a non-empty N x C x H x W array, not shape "
                           f"{tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise StriateError("calibration data must be finite (found NaN or infinity)")
    was_training = model.training
    model.eval()
    try:
        nodes = trace(model, tuple(x.shape[1:]))
    finally:
        model.train(was_training)
    if not nodes:
        raise StriateError("model has no layers to compile")
    for float_pass in FLOAT_PASSES:
        nodes = float_pass(nodes)
    return nodes, x


def compile(model, calibration, config: AcceleratorConfig | None = None) -> Program:
    """Compile ``model`` for ``config`` (default `AcceleratorConfig()`), calibrating on
    ``calibration`` (float ``N x C x H x W``, torch or NumPy)."""
    config = AcceleratorConfig() if config is None else config
    if not isinstance(config, AcceleratorConfig):
        raise StriateError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
    nodes, x = lower(model, calibration)
    graph = quantize_graph(nodes, x, tuple(x.shape[1:]))
    for integer_pass in INTEGER_PASSES:
        graph = integer_pass(graph)
    graph = im2col_input(graph, config)
    return Program(graph, config)
