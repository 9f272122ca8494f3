"""How well each calibration method keeps a trained model's predictions, next to PyTorch's own
int8 post-training quantization (FX graph mode, the default ``"x86"`` qconfig mapping, on the
same calibration images). ``make bench`` prints it for the committed LeNet."""

from __future__ import annotations

import copy
import warnings

import numpy as np


def torch_ptq_predict(model, calibration: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Class predictions of ``model`` quantized by PyTorch (``prepare_fx``, a calibration pass,
    ``convert_fx``) on float inputs ``x``."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    model = copy.deepcopy(model).eval()
    cal = torch.from_numpy(np.asarray(calibration, np.float32))
    with warnings.catch_warnings():     # PyTorch's deprecation notes on the FX API
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (cal[:1],))
        with torch.no_grad():
            prepared(cal)
            quantized = convert_fx(prepared)
            return quantized(torch.from_numpy(np.asarray(x, np.float32))).numpy() \
                .reshape(len(x), -1).argmax(1)


def compare(model, calibration: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict:
    """Per calibration method and for ``"pytorch-fx-x86"``: top-1 on ``(x, y)`` and the share
    of inputs whose class agrees with the float model's."""
    import torch
    from .compiler import compile as compile_model
    from .ir.quantize import CALIBRATION_METHODS
    with torch.no_grad():
        float_pred = model.eval()(torch.from_numpy(np.asarray(x, np.float32))).numpy() \
            .reshape(len(x), -1).argmax(1)
    preds = {}
    for method in CALIBRATION_METHODS:
        program = compile_model(model, calibration, calibration_method=method)
        preds[method] = program.run_reference(program.quantize_input(x)).reshape(len(x), -1) \
            .argmax(1)
    preds["pytorch-fx-x86"] = torch_ptq_predict(model, calibration, x)
    result = {name: {"top1": float(np.mean(p == y)), "agreement": float(np.mean(p == float_pred))}
              for name, p in preds.items()}
    result["float"] = {"top1": float(np.mean(float_pred == y)), "agreement": 1.0}
    return result
