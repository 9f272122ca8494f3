"""1-D nets on ``N x C x L`` signals (time-delay nets): Conv1d, BatchNorm1d, 1-D pooling and
their functional forms, each run as its 2-D form on a ``C x 1 x L`` map; bit-exact on the RTL."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate import UnsupportedLayerError

import rtl_cases


class TDNN(nn.Module):
    """Time-delay layers over 40 features x 64 frames, as speech nets stack them (a signal is
    at most ``max_width`` samples long)."""

    def __init__(self, features=40, classes=12):
        super().__init__()
        torch.manual_seed(0)
        self.tdnn1 = nn.Conv1d(features, 32, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(32)
        self.tdnn2 = nn.Conv1d(32, 32, 3, stride=2)
        self.bn2 = nn.BatchNorm1d(32)
        self.tdnn3 = nn.Conv1d(32, 48, 3, padding="same")
        self.pool = nn.MaxPool1d(2)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(48, classes)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = F.relu(self.bn1(self.tdnn1(x)))
        y = F.max_pool1d(y, 2)
        y = F.relu(self.bn2(self.tdnn2(y)))
        y = self.pool(F.relu(self.tdnn3(y)))
        return self.fc(torch.flatten(self.gap(y), 1))


def test_time_delay_net_runs_bit_exact_on_the_rtl(device):
    model = TDNN().eval()
    x = np.random.default_rng(0).standard_normal((16, 40, 64)).astype(np.float32)
    program = striate.compile(model, x)
    assert program.graph.input_shape == (40, 64) and program.graph.output_shape == (12,)
    assert [l.in_shape for l in program.layers[:3]] == [(40, 1, 64), (32, 1, 32), (32, 1, 15)]
    assert [l.kernel for l in program.layers[:3]] == [(1, 5), (1, 3), (1, 3)]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    y = program.run_reference(program.quantize_input(x)) * program.output_scale
    assert 10 * np.log10((ref ** 2).sum() / ((ref - y) ** 2).sum()) > 35
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_a_net_ending_in_a_signal_and_a_thin_first_layer(device, tmp_path):
    """One input channel: the first layer is unfolded on the host (1 x 7 windows); the output
    is a ``C x L`` signal, read back in that shape and kept by a save / load round trip."""
    model = nn.Sequential(nn.Conv1d(1, 8, 7, padding=3), nn.ReLU(), nn.AvgPool1d(2),
                          nn.Conv1d(8, 4, 3, stride=2, padding="valid")).eval()
    x = np.random.default_rng(1).standard_normal((8, 1, 64)).astype(np.float32)
    program = striate.compile(model, x)
    assert program.graph.input_im2col == (1, 7, 1, 1, 0, 3)
    assert program.graph.output_shape == (4, 15)
    xq = program.quantize_input(x[:2])
    rtl_cases.check_on_rtl(device, program, xq)
    assert device.run(program, xq).shape == (2, 4, 15)
    program.save(tmp_path / "tdnn.stp")
    loaded = striate.load_program(tmp_path / "tdnn.stp")
    assert loaded.graph.input_shape == (1, 64) and loaded.graph.output_shape == (4, 15)
    np.testing.assert_array_equal(loaded.run_reference(xq), program.run_reference(xq))


def test_signal_graphs_residual_and_concatenation(device):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(6, 6, 3, padding=1), nn.Conv1d(6, 5, 1)

        def forward(self, x):
            y = F.relu(self.a(x) + x)
            return torch.cat([y, self.b(y)], dim=-2)
    x = np.random.default_rng(2).standard_normal((8, 6, 30)).astype(np.float32)
    program = striate.compile(Block().eval(), x)
    assert program.graph.output_shape == (11, 30)
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


@pytest.mark.parametrize("layer, message", [
    (nn.Conv1d(4, 4, 3, padding_mode="reflect"), r"Conv1d at '0' is not supported: "
                                                 r"padding_mode must be 'zeros', not 'reflect'"),
    (nn.AvgPool1d(2, ceil_mode=True), r"AvgPool1d at '0' is not supported: ceil_mode=True"),
    (nn.Conv2d(4, 4, 3), r"Conv2d at '0' is not supported: expects 4 x H x W input, not "
                         r"\(4, 16\)"),
    (nn.BatchNorm1d(4), r"BatchNorm1d at '0' is not supported: it must directly follow a "
                        r"Conv1d to be folded, not the input"),
    (nn.AdaptiveAvgPool1d(2), r"AdaptiveAvgPool1d at '0' is not supported: output_size must "
                              r"be 1, not 2"),
])
def test_what_signals_cannot_take_is_named(layer, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        striate.compile(nn.Sequential(layer).eval(), np.random.rand(4, 4, 16))


def test_a_signal_longer_than_the_widest_map_is_refused():
    with pytest.raises(striate.MappingError, match=r"input width must be <= 256 \(AcceleratorConfig"
                                                   r"\.max_width\), not 300"):
        striate.compile(TDNN().eval(), np.random.rand(4, 40, 300))
