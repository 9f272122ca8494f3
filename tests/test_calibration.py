"""Calibration methods: min/max, percentile and MSE-optimal clipping, measured against PyTorch's
own int8 post-training quantization on the committed models."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import striate
from striate.sw.cli import main
from striate.sw.ir.quantize import CALIBRATION_METHODS
from striate.sw.ptq import compare

import rtl_cases


# Images of the 360 on which a method may trail PyTorch's PTQ: each loses one borderline image
# (a float logit margin under 0.1) that PyTorch keeps; the default method trails nowhere
# (docs/numerics.md, "Calibration choices").
BEHIND = {("lenet-digits", "percentile"): 1, ("tdnn-digits", "mse"): 1}


@pytest.mark.parametrize("name", striate.models.names())
def test_committed_models_keep_up_with_pytorch_ptq(name):
    """Every method: top-1 on the test split at least PyTorch's FX int8 PTQ (x86 qconfig, same
    calibration images; but for `BEHIND`) and the float model's class on at least 99.7 % of
    it."""
    from striate.sw.datasets import load
    from striate.sw.modelspec import resolve
    spec = resolve(name)
    x, y = load(spec.dataset, "test")
    result = compare(spec.module, spec.calibration, x, y)
    torch_top1 = result["pytorch-fx-x86"]["top1"]
    for method in CALIBRATION_METHODS:
        slack = BEHIND.get((name, method), 0) / len(y)
        assert result[method]["top1"] >= torch_top1 - slack - 1e-12, (method, result)
        assert result[method]["agreement"] >= 0.997, (method, result)


def _outlier_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_clipping_methods_clip_long_tails_and_stay_bit_exact(device):
    """With an extreme calibration value, percentile and MSE clipping give no tensor a coarser
    scale than min/max, the input a finer one; the programs run bit-exact on the RTL."""
    x = np.random.default_rng(0).laplace(size=(32, 3, 10, 10)).astype(np.float32)
    x[0, 0, 0, 0] = 60.0          # one value in 9,600
    programs = {m: striate.compile(_outlier_net(), x, calibration_method=m)
                for m in CALIBRATION_METHODS}
    wide = programs["minmax"]
    assert programs["percentile"].input_scale < wide.input_scale / 2
    assert programs["mse"].input_scale < wide.input_scale    # one outlier weighs in the MSE
    for method in ("percentile", "mse"):
        program = programs[method]
        assert all(a.out_scale <= b.out_scale * (1 + 1e-12)
                   for a, b in zip(program.layers, wide.layers)), method
    for program in programs.values():
        rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_an_unknown_method_is_refused():
    with pytest.raises(striate.StriateError, match="calibration_method must be one of 'minmax', "
                                                   "'percentile', 'mse', not 'kl'"):
        striate.compile(_outlier_net(), np.zeros((2, 3, 8, 8)), calibration_method="kl")


def test_cli_compiles_with_a_method(tmp_path, capsys):
    out = tmp_path / "mse.stp"
    assert main(["compile", "lenet-digits", "-o", str(out), "--calibration-method", "mse"]) == 0
    loaded = striate.load_program(out)
    default = tmp_path / "minmax.stp"
    assert main(["compile", "lenet-digits", "-o", str(default)]) == 0
    assert loaded.layers[0].out_scale < striate.load_program(default).layers[0].out_scale
