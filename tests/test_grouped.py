"""Grouped and depthwise convolutions (``groups`` > 1, depth multipliers), on maps and signals:
stored as the dense convolution with zero weights across groups, split into parts of fewer
groups that read slices of their input (`grouped.split_grouped`), bit-exact on the RTL; MACs
count only each group's inputs."""

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn

import striate
from striate.hw.platform.boards import BOARDS
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
    graph = program.graph
    # the depth multiplier: each channel copied twice, then 32 channels on the window
    spread, dw = graph.layer("2.spread"), graph.layer("2")
    assert spread.is_copy and spread.out_shape == (32, 12, 12) and dw.inputs == ("2.spread",)
    assert (dw.groups, dw.weight.shape) == (32, (32, 32, 3, 3))
    assert program.plan.depthwise[[l.name for l in graph.layers].index("2")]
    assert spread.macs + dw.macs == 32 * 12 * 12 * 1 * 9          # one input channel per output
    grouped = [l for l in graph.layers if l.name.startswith("7.part")]
    assert [l.groups for l in grouped] == [2, 2]    # six channels per group: 12 start a word
    assert sum(l.macs for l in grouped) == 24 * 5 * 5 * 6 * 9
    loaded = rtl_cases.check_end_to_end(device, program, model, x[:2], tmp_path / "dw.stp")
    assert [(l.groups, l.channel_offset) for l in loaded.layers] == \
        [(l.groups, l.channel_offset) for l in program.layers]


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


def _utilisation(program, name):
    """Ideal over predicted cycles of the parts (or the whole) of layer ``name``."""
    from striate.sw.golden import cycles
    config, total, ideal = program.config, 0, 0.0
    for layer, predicted in zip(program.layers, cycles.program_cycles(program)):
        if layer.name == name or layer.name.startswith(name + ".part"):
            total += predicted
            ideal += cycles.ideal_cycles(layer, config)
    return ideal / total


def test_a_split_grouped_convolution_keeps_the_array_busy(device):
    """64 channels in 4 groups of 16, 3x3 on 12 x 12, reading the network input: four parts of
    one group each, every part's 16 output channels fill the 16 PE rows. Run whole, 3/4 of
    the products would be zeros across groups."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=4), nn.ReLU(),
                          nn.Conv2d(64, 8, 1)).eval()
    x = np.random.default_rng(4).standard_normal((8, 64, 12, 12)).astype(np.float32)
    program = striate.compile(model, x)
    parts = [l for l in program.layers if l.name.startswith("0.part")]
    assert [(l.groups, l.channel_offset, l.inputs) for l in parts] == \
        [(1, 16 * j, ("@input",)) for j in range(4)]
    assert program.plan.tensors["@input"][1] == 64 * 12 * 12     # the whole input is written
    assert [a for a, _ in program.plan.act_in[:4]] == \
        [program.plan.tensors["@input"][0] + 16 * 12 * 12 * j for j in range(4)]
    assert _utilisation(program, "0") >= 0.95
    whole = striate.compile(model, x, striate.AcceleratorConfig(program_depth=2))
    assert [l.name for l in whole.layers] == ["0", "2"]     # no descriptors left to split
    assert _utilisation(whole, "0") <= 0.26
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_parts_have_whole_words_and_fit_the_parameter_memory():
    x = np.random.default_rng(5).standard_normal((4, 24, 6, 6)).astype(np.float32)
    # 24 channels in 6 groups: parts of 12, 8 or 4 channels start on words, 2 channels do not
    program = striate.compile(nn.Sequential(nn.Conv2d(24, 24, 3, groups=6)).eval(), x)
    assert 2 <= sum(".part" in l.name for l in program.layers) <= 6
    assert all(l.in_shape[0] % 4 == 0 for l in program.layers if l.op == "conv")
    # each part takes a row of 16 parameter entries: 32 entries leave room for two parts
    tight = striate.AcceleratorConfig(param_entries=32)
    split = striate.compile(nn.Sequential(nn.Conv2d(24, 24, 3, groups=6)).eval(), x, tight)
    assert [l.name for l in split.layers if l.op == "conv"] == ["0.part0", "0.part1"]
    # on a 2-lane array 6 channels per group start on words too
    narrow = striate.compile(nn.Sequential(nn.Conv2d(12, 12, 3, groups=2)).eval(),
                             x[:, :12], striate.AcceleratorConfig(pe_out=4, pe_in=2))
    assert [l.channel_offset for l in narrow.layers if l.op == "conv"] == [0, 6]


def test_a_depthwise_layer_without_the_window_is_split():
    """On the iCEBreaker (2 x 4 PE array, no depthwise datapath, 8 descriptors) 32 depthwise
    channels run as four parts of 8: each output word reads 2 input words instead of 8. Its
    program depth leaves no room for eight parts of one word each."""
    config = BOARDS["icebreaker"].config
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(8, 32, 1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1, groups=32)).eval()
    x = np.random.default_rng(6).standard_normal((8, 8, 6, 6)).astype(np.float32)
    program = striate.compile(model, x, config)
    assert [l.name for l in program.layers] == ["0"] + [f"2.part{j}" for j in range(4)] + ["2"]
    whole = striate.compile(model, x, striate.AcceleratorConfig(
        **{**config.to_dict(), "program_depth": 2}))
    assert _utilisation(program, "2") >= 3.5 * _utilisation(whole, "2")
    with striate.open("verilator", config) as device:
        rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:1]))


def _edit_first_part(path, **fields):
    data = path.read_bytes()
    payload = data[fileformat._HEADER.size:]
    (n,) = struct.unpack_from("<I", payload)
    header, blob = json.loads(payload[4:4 + n]), payload[4 + n:]
    layer = next(l for l in header["layers"] if l["name"].endswith(".part1"))
    layer.update(fields)
    text = json.dumps(header).encode()
    payload = struct.pack("<I", len(text)) + text + blob
    path.write_bytes(fileformat._HEADER.pack(fileformat.MAGIC, fileformat.FORMAT_VERSION, 0,
                                             len(payload), hashlib.sha256(payload).digest())
                     + payload)


@pytest.mark.parametrize("offset, error, message", [
    (-4, striate.ProgramFormatError, "channel_offset must be an integer >= 0, not -4"),
    (64, striate.ProgramFormatError, r"input shape 16x12x12 from channel 64 on must be"),
    (6, striate.StriateError, "channel_offset 6 must be a multiple of 4"),
])
def test_a_file_whose_slice_does_not_fit_its_input_is_refused(offset, error, message, tmp_path):
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(8, 64, 1), nn.Conv2d(64, 64, 3, padding=1, groups=4))
    x = np.random.default_rng(7).standard_normal((4, 8, 12, 12)).astype(np.float32)
    path = tmp_path / "g.stp"
    striate.compile(model.eval(), x).save(path)
    assert striate.load_program(path).graph.layer("1.part1").channel_offset == 16
    _edit_first_part(path, channel_offset=offset)
    with pytest.raises(error, match=message):
        striate.load_program(path)


def test_a_program_too_deep_to_split_is_refused_for_its_depth():
    layers = [nn.Conv2d(8, 8, 3, padding=1, groups=2)] + [nn.Conv2d(8, 8, 1) for _ in range(3)]
    x = np.random.default_rng(8).standard_normal((4, 8, 6, 6)).astype(np.float32)
    with pytest.raises(striate.MappingError, match="program must have 1 to 3 layers"):
        striate.compile(nn.Sequential(*layers).eval(), x, striate.AcceleratorConfig(
            program_depth=3))


@pytest.mark.parametrize("seed", range(40))
def test_parts_and_spread_compute_what_the_layer_computes(seed):
    """Random grouped layers (groups, depth multipliers, kernels, strides, padding, pooling,
    clamps and tables): every way `split_grouped` may run one gives the layer's int8 output."""
    from striate.sw.golden.model import run_layer
    from striate.sw.ir.graph import QLayer
    from striate.sw.ir.kernels import out_size
    from striate.sw.mapping import grouped
    rng = np.random.default_rng(seed)
    g = int(rng.choice([2, 3, 4, 6, 8]))
    cg, og = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    c, o = g * cg, g * og
    h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    oh, ow = out_size(h, kh, stride[0], ph), out_size(w, kw, stride[1], pw)
    mask = np.arange(o)[:, None] // og == np.arange(c)[None, :] // cg
    weight = (rng.integers(-127, 128, (o, c, kh, kw)) * mask[:, :, None, None]).astype(np.int8)
    pool = rng.random() < 0.3 and oh >= 2 and ow >= 2
    layer = QLayer(
        name="g", op="conv", in_shape=(c, h, w), out_shape=(o, oh // 2, ow // 2) if pool
        else (o, oh, ow), out_scale=1.0, weight=weight,
        bias=rng.integers(-3000, 3000, o).astype(np.int32),
        mult=rng.integers(1 << 30, 1 << 31, o).astype(np.int64),
        shift=rng.integers(36, 42, o).astype(np.int64), stride=stride, padding=(ph, pw),
        groups=g, lo=int(rng.choice([-128, 0])), inputs=("@input",),
        pool="max" if pool else "none", pool_kernel=(2, 2) if pool else (1, 1),
        pool_stride=(2, 2) if pool else (1, 1),
        table=rng.integers(-128, 128, 256).astype(np.int8) if rng.random() < 0.2 else None)
    layer.check()
    x = rng.integers(-128, 128, (3, c, h, w)).astype(np.int8)
    want = run_layer(layer, x)
    ways = [grouped.parts(layer, count) for count in range(2, g + 1) if g % count == 0]
    if cg == 1 and og > 1:
        ways.append(grouped.spread(layer, 1.0))
    assert ways
    for way in ways:
        tensors = {"@input": x}
        for part in way:
            part.check()
            tensors[part.name] = run_layer(part, *(tensors[n] for n in part.inputs))
        got = tensors[way[-1].name] if way[-1].name == "g" else \
            np.concatenate([tensors[p.name] for p in way], axis=1)
        np.testing.assert_array_equal(got, want)


def test_a_grouped_first_layer_the_host_unfolds_stays_whole(tmp_path):
    """Three input channels of a 4x4 kernel unfold on the host into 48 (three groups of 16,
    which would split on words, in a third of the cycles): one layer must read the unfolded
    input, so it stays whole."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(3, 48, 4, groups=3), nn.ReLU()).eval()
    x = np.random.default_rng(9).standard_normal((8, 3, 12, 12)).astype(np.float32)
    program = striate.compile(model, x)
    assert program.graph.input_im2col and [l.name for l in program.layers] == ["0"]
    assert program.layers[0].groups == 3 and program.layers[0].in_shape[0] == 48
    program.save(tmp_path / "u.stp")
    xq = program.quantize_input(x[:2])
    np.testing.assert_array_equal(striate.load_program(tmp_path / "u.stp").run_reference(xq),
                                  program.run_reference(xq))


def test_a_copy_that_does_not_fit_the_activation_memory_leaves_parts():
    """Depth multiplier 3 (12 -> 36 channels on 16 x 16): the copy's 36-channel map beside the
    output needs 18 KiB, whole the layer needs 12 KiB. With 16 KiB it runs as parts, with the
    same values."""
    torch.manual_seed(10)
    model = nn.Sequential(nn.Conv2d(12, 36, 3, padding=1, groups=12)).eval()
    x = np.random.default_rng(10).standard_normal((4, 12, 16, 16)).astype(np.float32)
    roomy = striate.compile(model, x)
    tight = striate.compile(model, x, striate.AcceleratorConfig(act_bytes=16384))
    assert [l.name for l in roomy.layers] == ["0.spread", "0"] and roomy.plan.act_peak == 18432
    assert [l.name for l in tight.layers] == ["0.part0", "0.part1", "0.part2", "0"]
    xq = roomy.quantize_input(x)
    np.testing.assert_array_equal(tight.run_reference(xq), roomy.run_reference(xq))
