"""Dilated convolutions (time-delay nets, ``dilation`` on Conv1d and Conv2d): run as the dense
convolution over the kernel's span with zero weights between the taps, bit-exact on the RTL;
MACs and the accumulator bound count only the taps."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import striate

import rtl_cases
from test_fileformat import pack, split


def _tdnn():
    """A time-delay net in the usual shape: contexts widening by dilation (1, 2, 3), one of
    them with ``padding='same'`` and one depthwise."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(6, 16, 3), nn.ReLU(),
        nn.Conv1d(16, 16, 3, dilation=2, padding="same"), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 16, 3, dilation=3, groups=16), nn.ReLU(),
        nn.Conv1d(16, 8, 2, dilation=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_time_delay_net_runs_bit_exact(device, tmp_path):
    model = _tdnn()
    x = np.random.default_rng(0).standard_normal((16, 6, 30)).astype(np.float32)
    program = striate.compile(model, x)
    convs = [l for l in program.layers if l.op == "conv" and l.kernel != (1, 1)]
    # the depthwise layer ('5') runs whole or in parts of 8 channels (which run in pixel
    # pairs), as the cycle model prefers
    depthwise = [l for l in convs if l.name.split(".")[0] == "5"]
    assert [(l.dilation, l.kernel) for l in convs] == [
        ((1, 1), (1, 3)), ((1, 2), (1, 5))] + [((1, 3), (1, 7))] * len(depthwise) + [
        ((1, 2), (1, 3))]
    assert sum(l.macs for l in depthwise) == 16 * 22 * 3     # one input channel, 3 taps
    assert convs[1].macs == 16 * 28 * 16 * 3
    loaded = rtl_cases.check_end_to_end(device, program, model, x[:2], tmp_path / "tdnn.stp")
    assert [l.dilation for l in loaded.layers] == [l.dilation for l in program.layers]


def test_dilated_conv2d_with_different_dilations_per_axis(device):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=(2, 1), dilation=(2, 1)), nn.ReLU(),
                          nn.Conv2d(8, 8, (2, 3), dilation=(3, 2), groups=2)).eval()
    x = np.random.default_rng(1).standard_normal((8, 3, 11, 9)).astype(np.float32)
    program = striate.compile(model, x)
    # not unfolded on the host: its zero taps would take lanes
    assert program.graph.input_im2col == ()
    assert [l.kernel for l in program.layers] == [(5, 3), (4, 5)]
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_a_span_beyond_max_kernel_is_refused_naming_the_module():
    model = nn.Sequential(nn.Conv1d(4, 4, 3), nn.Conv1d(4, 4, 3, dilation=4)).eval()
    with pytest.raises(striate.MappingError, match=r"'1'.*kernel size must be <= 7 "
                       r"\(AcceleratorConfig.max_kernel\), not 1x9 \(a 1x4 dilated kernel's span\)"):
        striate.compile(model, np.random.rand(4, 4, 30).astype(np.float32))


@pytest.mark.parametrize("layer, dilation, message", [
    (1, [1, 2], r"layer '2': dilation must divide the 1x5 kernel's span and the weights be zero "
                r"between its taps, not dilation=\(1, 2\)"),
    (0, [1, 3], r"layer '0': dilation must divide the 1x5 kernel's span"),
    (0, [1, 0], r"dilation must be two integers >= 1, not \[1, 0\]"),
    (0, 2, "dilation must be two integers >= 1, not 2"),
])
def test_a_file_whose_dilation_does_not_match_its_weights_is_refused(layer, dilation, message,
                                                                     tmp_path):
    model = nn.Sequential(nn.Conv1d(4, 4, 3, dilation=2, padding=2), nn.ReLU(),
                          nn.Conv1d(4, 4, 5)).eval()
    program = striate.compile(model, np.random.rand(4, 4, 20).astype(np.float32))
    path = tmp_path / "p.stp"
    program.save(path)
    header, blob = split(path.read_bytes())
    assert header["layers"][0]["dilation"] == [1, 2]
    header["layers"][layer]["dilation"] = dilation
    path.write_bytes(pack(json.dumps(header).encode(), blob))
    with pytest.raises(striate.ProgramFormatError, match=message):
        striate.load_program(path)
