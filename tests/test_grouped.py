"""Grouped and depthwise convolutions (``groups`` > 1, depth multipliers), on maps and signals:
run as the dense convolution with zero weights across groups, bit-exact on the RTL; MACs count
only each group's inputs."""

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn

import striate
from striate.sw.runtime import fileformat

import rtl_cases


def _separable():
    """A depthwise-separable block (DS-CNN, MobileNet): 3x3 depthwise with a depth multiplier of
    2, BatchNorm and ReLU, a 1x1 pointwise, then a grouped 3x3 and a classifier."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 24, 1), nn.ReLU(),
        nn.Conv2d(24, 24, 3, stride=2, groups=4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))
    bn = model[3]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_depthwise_separable_block_runs_bit_exact(device, tmp_path):
    model = _separable()
    x = np.random.default_rng(0).standard_normal((16, 3, 12, 12)).astype(np.float32)
    program = striate.compile(model, x)
    dw = program.layers[1]
    assert dw.groups == 16 and dw.weight.shape == (32, 16, 3, 3)
    assert dw.macs == 32 * 12 * 12 * 1 * 9          # one input channel per output
    assert program.layers[3].groups == 4 and program.layers[3].macs == 24 * 5 * 5 * 6 * 9
    loaded = rtl_cases.check_end_to_end(device, program, model, x[:2], tmp_path / "dw.stp")
    assert [l.groups for l in loaded.layers] == [l.groups for l in program.layers]


def test_grouped_conv1d_on_signals(device):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv1d(8, 8, 5, padding=2, groups=8), nn.ReLU(),
                          nn.Conv1d(8, 12, 3, groups=4)).eval()
    x = np.random.default_rng(1).standard_normal((8, 8, 30)).astype(np.float32)
    program = striate.compile(model, x)
    assert [l.groups for l in program.layers] == [8, 4]
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_a_grouped_convolution_reads_a_concatenation_without_zero_channels(device):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.a, self.b = nn.Conv2d(4, 3, 3, padding=1), nn.Conv2d(4, 3, 1)
            self.dw = nn.Conv2d(6, 6, 3, groups=6)

        def forward(self, x):
            return self.dw(torch.cat([self.a(x), self.b(x)], 1))
    x = np.random.default_rng(2).standard_normal((8, 4, 7, 7)).astype(np.float32)
    program = striate.compile(Net().eval(), x)
    assert program.graph.layer("dw").inputs == ("cat.dense",)
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


@pytest.mark.parametrize("groups, message", [
    (2, "groups must divide the 16 output and 3 input channels"),
    (0, "groups must be an integer >= 1, not 0"),
])
def test_a_file_whose_groups_do_not_match_its_weights_is_refused(groups, message, tmp_path):
    model = _separable()
    program = striate.compile(model, np.random.rand(4, 3, 12, 12).astype(np.float32),
                              striate.AcceleratorConfig(pe_in=2))
    path = tmp_path / "p.stp"
    program.save(path)
    data = path.read_bytes()
    payload = data[fileformat._HEADER.size:]
    (n,) = struct.unpack_from("<I", payload)
    header, blob = json.loads(payload[4:4 + n]), payload[4 + n:]
    header["layers"][0]["groups"] = groups
    text = json.dumps(header).encode()
    payload = struct.pack("<I", len(text)) + text + blob
    path.write_bytes(fileformat._HEADER.pack(fileformat.MAGIC, fileformat.FORMAT_VERSION, 0,
                                             len(payload), hashlib.sha256(payload).digest())
                     + payload)
    with pytest.raises(striate.ProgramFormatError, match=message):
        striate.load_program(path)


def test_a_grouped_layer_is_copied_into_a_concatenation_it_does_not_fill(tmp_path):
    """Zero output channels would break a grouped layer's groups: a copy fills the slot, and the
    program file loads back."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.dw, self.b = nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 4, 1)

        def forward(self, x):
            return torch.cat([self.dw(x), self.b(x)], 1)
    x = np.random.default_rng(3).standard_normal((8, 6, 5, 5)).astype(np.float32)
    program = striate.compile(Net().eval(), x)
    assert program.graph.layer("cat").inputs == ("cat.slot0", "b")
    assert program.graph.layer("dw").out_shape == (6, 5, 5)
    program.save(tmp_path / "cat.stp")
    xq = program.quantize_input(x[:2])
    np.testing.assert_array_equal(striate.load_program(tmp_path / "cat.stp").run_reference(xq),
                                  program.run_reference(xq))
