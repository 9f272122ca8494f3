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


@pytest.mark.parametrize("module", [nn.Conv2d(6, 5, 3, stride=2, padding=1),
                                    nn.Conv1d(6, 5, 3, padding=2, dilation=2), nn.Linear(6, 5)])
def test_the_bias_takes_out_the_mean_the_rounded_weights_add(module):
    """On inputs the int8 grid holds exactly, the quantized layer's mean output per channel
    over the calibration data equals the float layer's up to the bias's own rounding; without
    the correction it is off by more."""
    from striate.sw.compiler import lower
    from striate.sw.ir import quantize
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shape = {nn.Conv2d: (6, 7, 7), nn.Conv1d: (6, 9), nn.Linear: (6,)}[type(module)]
    xq = rng.integers(0, 128, (64, *shape))     # one-sided, so the means are far from 0
    xq.flat[0] = 127
    x = (xq / 127.0).astype(np.float32)
    nodes, _ = lower(nn.Sequential(module).eval(), x)
    (node,) = nodes
    w = node.params["weight"].reshape(node.params["weight"].shape[0], -1)
    s_w = np.abs(w).max(axis=1) / 127
    with torch.no_grad():
        want = module(torch.from_numpy(x)).double().numpy()
    axes = tuple(i for i in range(want.ndim) if i != 1)
    errors = {}
    for corrected in (False, True):
        means = quantize.tap_means(node, x.astype(np.float64)) if corrected else None
        wq, bq, _, _ = quantize._quantize_weights(node, "layer", 1 / 127, 1.0, (-128, 127),
                                                  means)
        weight = torch.from_numpy(wq * s_w.reshape(-1, 1, 1, 1))     # dense over the span
        bias = torch.from_numpy(bq / 127 * s_w)
        xd = torch.from_numpy(x).double()
        if isinstance(module, nn.Linear):
            got = (xd @ weight.reshape(5, -1).T + bias).numpy()
        else:
            got = torch.nn.functional.conv2d(
                xd.reshape(64, 6, -1, x.shape[-1]), weight, bias, node.attrs["stride"],
                node.attrs["padding"]).reshape(want.shape).numpy()
        errors[corrected] = np.abs(got.mean(axis=axes) - want.mean(axis=axes))
    assert np.all(errors[True] <= s_w / 127 / 2 + 1e-6), errors
    assert np.any(errors[False] > 2 * s_w / 127), errors
