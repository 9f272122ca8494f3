"""Zero padding as its own op (``F.pad``, ``ZeroPad1d/2d``, ``ConstantPad1d/2d`` with 0): folded
into the convolution or average pool after it when even on both sides, into the convolution
when one more at the bottom or right (Keras' asymmetric 'same' padding of stride-2 layers),
else a copy layer that shifts the map into a larger one (padding before a max pool); bit-exact
on the RTL."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate import UnsupportedLayerError

import rtl_cases


class Net(nn.Module):
    def __init__(self, forward, c_in=3):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(c_in, 8, 3, stride=2)
        self.b = nn.Conv2d(8, 8, 3)
        self.c = nn.Conv1d(c_in, 8, 3)
        self.zero2d, self.zero1d = nn.ZeroPad2d(1), nn.ZeroPad1d((2, 0))
        self.constant = nn.ConstantPad2d(2, 0.0)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


CASES = {
    # Keras / TFLite 'same' on a stride-2 layer: 0 rows and columns before, 1 after; folded
    # into the convolution (one more zero row and column at the bottom and right), here
    # unfolded on the host with it
    "asymmetric stride 2": (lambda s, x: s.a(F.pad(x, (0, 1, 0, 1))), (3, 17, 16), 0),
    "asymmetric inside": (lambda s, x: s.b(F.pad(F.relu(s.a(x)), (1, 2, 0, 1))), (3, 16, 17),
                          0),
    "one more before": (lambda s, x: s.b(F.pad(s.a(x), (1, 0, 0, 0))), (3, 16, 16), 1),
    "before a max pool": (lambda s, x: F.max_pool2d(s.zero2d(F.relu(s.a(x))), 2),
                          (3, 15, 15), 1),
    "even, folded": (lambda s, x: s.b(s.constant(s.a(x))), (3, 15, 15), 0),
    "even before an average pool": (lambda s, x: F.avg_pool2d(F.pad(s.a(x), (1, 1, 1, 1)), 3),
                                    (3, 15, 15), 0),
    "causal signal": (lambda s, x: s.c(s.zero1d(x)), (3, 20), 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_padding_runs_bit_exact(case, device):
    forward, shape, copies = CASES[case]
    model = Net(forward).eval()
    x = np.random.default_rng(3).standard_normal((8, *shape)).astype(np.float32)
    program = striate.compile(model, x)
    pads = [l for l in program.layers if l.is_copy]
    assert len(pads) == copies and all(l.macs == 0 for l in pads)
    xq = program.quantize_input(x[:2])
    with torch.no_grad():
        ref = model(torch.from_numpy(x[:2])).numpy()
    y = program.run_reference(xq) * program.output_scale
    assert np.abs(y - ref).max() <= 0.05 * np.abs(ref).max() + 4 * program.output_scale
    rtl_cases.check_on_rtl(device, program, xq)


def test_keras_same_padding_folds_into_the_convolution(device, tmp_path):
    """DS-CNN's first layer as its reference file computes it: 49 x 10 MFCC, padded (4, 5)
    rows and (1, 1) columns, a 10 x 4 stride-2 convolution: one layer, unfolded on the host
    with the extra row, and the program file keeps it."""
    torch.manual_seed(5)
    model = Net(lambda s, x: F.relu(s.first(F.pad(x, (1, 1, 4, 5)))), c_in=1)
    model.first = nn.Conv2d(1, 16, (10, 4), stride=2)
    model.eval()
    x = np.random.default_rng(5).standard_normal((8, 1, 49, 10)).astype(np.float32)
    program = striate.compile(model, x)
    assert len(program.layers) == 1 and program.layers[0].out_shape == (16, 25, 5)
    assert program.graph.input_im2col == (10, 4, 2, 2, 4, 1, 1, 0)
    loaded = rtl_cases.check_end_to_end(device, program, model, x[:2], tmp_path / "p.stp")
    assert loaded.graph.input_im2col == program.graph.input_im2col
    unfolded = striate.compile(model, x, striate.AcceleratorConfig(pe_in=1, pe_out=16,
                                                                   max_kernel=10))
    assert unfolded.layers[0].pad_extra == (1, 0) and unfolded.graph.input_im2col == ()


def test_even_padding_folds_into_the_convolution():
    model = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(8, 4, 3), nn.ReLU()).eval()
    program = striate.compile(model, np.random.rand(4, 8, 8, 8))
    assert len(program.layers) == 1 and program.layers[0].padding == (1, 1)
    assert program.layers[0].sources == ("0", "1", "2")


@pytest.mark.parametrize("layer, message", [
    (lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"),
     "pad at 'pad' is not supported: mode must be 'constant', not 'reflect'"),
    (nn.ConstantPad2d(1, 0.5), "ConstantPad2d at '0' is not supported: the padding value must "
                               "be 0, not 0.5"),
    (lambda x: F.pad(x, (-1, 0, 0, 0)), r"pad at 'pad' is not supported: pads \[-1, 0, 0, 0\] "
                                        r"must be >= 0 \(no cropping\)"),
    (lambda x: F.pad(x, (0, 0, 0, 0, 1, 1)), "pad at 'pad' is not supported: pads "),
])
def test_padding_the_hardware_cannot_do_is_named(layer, message):
    class Wrap(nn.Module):
        def forward(self, x):
            return layer(x)
    model = nn.Sequential(layer).eval() if isinstance(layer, nn.Module) else Wrap()
    with pytest.raises(UnsupportedLayerError, match=message):
        striate.compile(model, np.random.rand(4, 3, 8, 8))


def test_ceil_mode_max_pooling_after_a_relu(device):
    """``ceil_mode=True`` (SqueezeNet's pools): the last windows' rows and columns past the map
    become a zero padding layer before the pool, exact after a ReLU; bit-exact on the RTL."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                          nn.Conv2d(8, 4, 1), nn.ReLU(),
                          nn.MaxPool2d(2, ceil_mode=True, padding=1)).eval()
    x = np.random.default_rng(0).standard_normal((16, 8, 14, 13)).astype(np.float32)
    program = striate.compile(model, x)
    assert [l.name for l in program.layers] == ["0", "2.ceil", "3"]
    assert program.graph.output_shape == (4, 4, 3)
    xq = program.quantize_input(x[:2])
    with torch.no_grad():
        ref = model(torch.from_numpy(x[:2])).numpy()
    assert np.abs(program.run_reference(xq) * program.output_scale - ref).max() <= \
        0.05 * np.abs(ref).max()
    rtl_cases.check_on_rtl(device, program, xq)


def test_ceil_mode_the_hardware_cannot_do_is_named():
    x = np.random.rand(4, 8, 8, 8)     # 6 x 6 after the convolution: a window past it
    with pytest.raises(UnsupportedLayerError, match="max pooling at '1' is not supported: "
                                                    "ceil_mode=True needs a non-negative input"):
        striate.compile(nn.Sequential(nn.Conv2d(8, 8, 3), nn.MaxPool2d(3, 2, ceil_mode=True))
                        .eval(), x)
    with pytest.raises(UnsupportedLayerError, match=r"AvgPool2d at '0' is not supported: "
                                                    r"ceil_mode=True \(supported for max"):
        striate.compile(nn.Sequential(nn.AvgPool2d(2, ceil_mode=True)).eval(), x)
