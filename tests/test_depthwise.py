"""The depthwise datapath (`AcceleratorConfig.depthwise_kernel`): depthwise layers of every
kernel within the window, stride, padding below the kernel, channel count and map shape run
bit-exact on the RTL with the cycle model exact; the figures it reaches; what stays dense."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import striate
from striate.hw.platform.boards import BOARDS
from striate.sim.cocotb_run import run_job, run_program
from striate.sw.golden import cycles
from striate.sw.ir.graph import QGraph, QLayer
from striate.sw.ir.kernels import out_size
from striate.sw.mapping import memmap
from striate.sw.fuzz import open_model
from striate.sw.mapping.descriptor import OP_CONV, OP_DW
from striate.sw.runtime import image
from striate.sw.runtime.program import Program

import rtl_cases

DEFAULT = striate.AcceleratorConfig()
# Four window rows and columns, a requantizer of two lanes (two lane groups per depthwise
# pixel) and a serial requantizer (all of a pixel's lane groups, one by one).
WIDE_WINDOW = striate.AcceleratorConfig(requant_lanes=2, depthwise_kernel=4, max_width=32,
                                        max_height=32, act_bytes=16384, weight_bytes=65536,
                                        param_entries=1024, program_depth=16)
SERIAL = striate.AcceleratorConfig(serial_scale_bits=8, requant_lanes=4, max_width=16,
                                   max_height=16, act_bytes=16384, weight_bytes=65536,
                                   param_entries=512, program_depth=8)


def depthwise_layer(rng, shape, k_max, name, stride_max=3):
    """A random depthwise layer on ``shape``: kernel up to ``k_max`` (non-square), stride up to
    ``stride_max``, padding below the kernel, a clamp and, now and then, a table."""
    c, h, w = shape
    # (a kernel taller than the map needs the padding: 3x3 on one row pads one each side)
    kh, kw = (int(rng.integers(1, k_max + 1)) for _ in (h, w))
    ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    stride = (int(rng.integers(1, stride_max + 1)), int(rng.integers(1, stride_max + 1)))
    oh, ow = out_size(h, kh, stride[0], ph), out_size(w, kw, stride[1], pw)
    weight = np.zeros((c, c, kh, kw), np.int8)
    weight[np.arange(c), np.arange(c)] = rng.integers(-127, 128, (c, kh, kw))
    base = 31 + int(np.log2(max(1.0, np.sqrt(kh * kw) * 127 * 64 / 100)))
    return QLayer(
        name=name, op="conv", in_shape=shape, out_shape=(c, oh, ow), out_scale=1.0,
        weight=weight, bias=rng.integers(-5000, 5000, c).astype(np.int32),
        mult=rng.integers(1 << 30, 1 << 31, c).astype(np.int64),
        shift=rng.integers(base - 2, base + 3, c).astype(np.int64), stride=stride,
        padding=(ph, pw), groups=c, lo=int(rng.choice([-128, 0])),
        table=rng.integers(-128, 128, 256).astype(np.int8) if rng.random() < 0.2 else None)


def depthwise_chain(seed, config, layers=4, max_channels=40):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, max_channels + 1)),
             int(rng.integers(1, 14)), int(rng.integers(1, config.max_width + 1)))
    if rng.random() < 0.3:                              # a signal: one row
        shape = (shape[0], 1, shape[2])
    elif rng.random() < 0.3:                            # tall and narrow, up to max_height
        shape = (min(shape[0], 6), int(rng.integers(config.max_height // 2,
                                                    config.max_height + 1)),
                 int(rng.integers(1, 9)))
    chain = []
    for i in range(layers):
        layer = depthwise_layer(rng, chain[-1].out_shape if chain else shape,
                                config.depthwise_kernel, f"dw{i}")
        chain.append(layer)
    graph = QGraph(layers=tuple(chain), input_shape=shape, input_scale=1.0,
                   output_shape=chain[-1].out_shape)
    return Program(graph, config), rng


@pytest.mark.parametrize("seed", range(6))
def test_random_depthwise_chains_bit_exact_on_verilator(device, seed):
    program, rng = depthwise_chain(seed, DEFAULT)
    assert all(program.plan.depthwise)
    assert {d.op for d in program.descriptors} == {OP_DW}
    rtl_cases.check_on_rtl(device, program, rtl_cases.random_inputs(rng, 2,
                                                                     program.graph.input_shape))


@pytest.mark.parametrize("config", [WIDE_WINDOW, SERIAL, BOARDS["ulx3s"].config],
                         ids=["wide-window", "serial", "ulx3s"])
def test_other_windows_and_requantizers(config):
    """Depthwise chains on other windows and requantizers; the ULX3S's on its board's design
    (`striate.sw.fuzz.open_model`)."""
    with (open_model("ulx3s") if config == BOARDS["ulx3s"].config
          else striate.open("verilator", config)) as dev:
        for seed in range(3):
            program, rng = depthwise_chain(100 + seed, config, layers=3)
            assert all(program.plan.depthwise)
            rtl_cases.check_on_rtl(dev, program, rtl_cases.random_inputs(
                rng, 1, program.graph.input_shape))


def test_stalls_everywhere_under_cocotb():
    """Random backpressure from the host side (cocotb) on a chain with every kind of edge."""
    program, rng = depthwise_chain(7, DEFAULT, layers=3, max_channels=9)
    xq = rtl_cases.random_inputs(rng, 1, program.graph.input_shape)
    results = run_program(program, xq, stall_prob=0.3, seed=3)
    reference = program.run_reference(xq, return_all=True)
    for out, ref in zip(results[0]["outputs"], reference):
        if out is not None:
            np.testing.assert_array_equal(out, ref[0].reshape(out.shape))
    np.testing.assert_array_equal(results[0]["layer_cycles"], cycles.program_cycles(program))


@pytest.mark.parametrize("size", [16, 32])
def test_a_3x3_depthwise_layer_keeps_half_the_array_busy(device, size):
    """32 channels of 3x3 on a 16 x 16 or 32 x 32 map: 9 taps x 4 channels of 64 multipliers
    per output pixel, one walk position per output pixel (the rows and columns past the map
    read the next group's first row and the next row's first column), but for the first
    group's row 0 and the layer's first position, and about 190 cycles per layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32)).eval()
    x = np.random.default_rng(0).standard_normal((8, 32, size, size)).astype(np.float32)
    program = striate.compile(model, x)
    assert program.plan.depthwise == (True,)
    (predicted,) = cycles.program_cycles(program)
    assert cycles.layer_items(program.layers[0], DEFAULT) == 8 * size * size + size + 1
    ideal = cycles.ideal_cycles(program.layers[0], DEFAULT)
    assert ideal / predicted >= 0.50
    stats = rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:1]))
    assert stats.layer_cycles[0] == predicted


@pytest.mark.parametrize("module, why", [
    (nn.Conv2d(8, 8, 5, padding=2, groups=8), "kernel beyond the window"),
    (nn.Conv2d(8, 8, 3, padding=3, groups=8), "padding as wide as the kernel"),
    (nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.MaxPool2d(2)), "pooling"),
])
def test_what_the_window_cannot_take_runs_dense(device, module, why):
    x = np.random.default_rng(1).standard_normal((8, 8, 9, 9)).astype(np.float32)
    program = striate.compile(nn.Sequential(module).eval(), x)
    assert program.plan.depthwise[0] is False, why
    assert program.descriptors[0].op == OP_CONV
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:1]))


def test_a_depth_multiplier_runs_on_the_window_after_a_copy(device):
    """Depth multiplier 2 (8 -> 16 channels): a 1x1 copy repeats each channel twice and the
    window runs the 16 channels, faster than parts on the convolution datapath."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.ReLU()).eval()
    x = np.random.default_rng(2).standard_normal((8, 8, 9, 9)).astype(np.float32)
    program = striate.compile(model, x)
    copy, dw = program.layers
    assert (copy.name, copy.is_copy, dw.name, dw.groups) == ("0.spread", True, "0", 16)
    assert program.plan.depthwise == (False, True)
    assert copy.out_scale == program.graph.input_scale
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_a_configuration_without_the_window_runs_depthwise_layers_dense():
    config = striate.AcceleratorConfig(depthwise_kernel=0)
    program = striate.compile(nn.Sequential(nn.Conv2d(8, 8, 3, groups=8)).eval(),
                              np.random.rand(4, 8, 6, 6).astype(np.float32), config)
    assert program.plan.depthwise == (False,) and program.descriptors[0].op == OP_CONV


@pytest.mark.parametrize("values, message", [
    ({"depthwise_kernel": 5}, r"depthwise_kernel must be 0 or in \[2, 4\]"),
    ({"pe_out": 8, "depthwise_kernel": 3}, r"depthwise_kernel must be 0 or in \[2, 2\]"),
    ({"depthwise_kernel": 1}, r"depthwise_kernel must be 0 or in \[2, 4\]"),
])
def test_windows_the_array_cannot_hold_are_refused(values, message):
    with pytest.raises(striate.ConfigError, match=message):
        striate.AcceleratorConfig(**values)


def test_illegal_depthwise_descriptors_stop_with_an_error():
    program, rng = depthwise_chain(11, DEFAULT, layers=1, max_channels=8)
    (d,) = program.descriptors
    xq = rtl_cases.random_inputs(rng, 1, program.graph.input_shape)[0]

    def changed(**fields):
        return type(d)(**{**d.__dict__, **fields})
    cases = [(changed(out_c=d.out_c + 1), memmap.E_SHAPE),
             (changed(pool=1), memmap.E_SHAPE),
             (changed(pad_h=d.k_h), memmap.E_SHAPE),
             (changed(k_w=4), memmap.E_LIMIT)]
    runs = [{"inputs": [(memmap.address(memmap.PROGRAM), np.array(bad.to_words(), np.uint32)),
                        image.input_image(program, xq)], "layers": 1, "outputs": []}
            for bad, _ in cases]
    results = run_job(DEFAULT, image.program_image(program), runs)
    for (_, code), res in zip(cases, results):
        assert (res["status"], res["error"]) == (memmap.FAILED, code)


@pytest.mark.parametrize("shape", [(10, 1, 28), (11, 1, 1), (9, 2, 5), (9, 3, 3)])
def test_reading_ahead_on_maps_of_few_rows(device, shape):
    """3x3 with padding 1 over several channel groups on maps of one to three rows: with two
    walk rows a group keeps its row 0 (the row that reads the next group's first word)."""
    rng = np.random.default_rng(sum(shape))
    layer = depthwise_layer(rng, shape, 3, "dw", stride_max=1)
    c = shape[0]
    weight = np.zeros((c, c, 3, 3), np.int8)
    weight[np.arange(c), np.arange(c)] = rng.integers(-127, 128, (c, 3, 3))
    layer = layer.replace(weight=weight, padding=(1, 1), stride=(1, 1), out_shape=shape)
    graph = QGraph(layers=(layer,), input_shape=shape, input_scale=1.0, output_shape=shape)
    program = Program(graph, DEFAULT)
    assert program.plan.depthwise == (True,)
    rows = shape[1] + 1
    skip_row = rows >= 3
    assert cycles.layer_items(layer, DEFAULT) == \
        3 * (rows - skip_row) * shape[2] + skip_row * shape[2] + 1
    xq = rng.integers(-128, 128, (2, *shape)).astype(np.int8)
    rtl_cases.check_on_rtl(device, program, xq)
