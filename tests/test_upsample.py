"""Nearest-neighbour upsampling by whole factors (``nn.Upsample``, ``nn.UpsamplingNearest2d``,
``F.interpolate`` with ``scale_factor`` or ``size``): a copy layer on the depthwise datapath
whose walk reads each input pixel for a block of output pixels; bit-exact on the RTL."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate.sim.cocotb_run import run_job
from striate.sw.golden import cycles
from striate.sw.mapping import memmap
from striate.sw.mapping.descriptor import OP_DW, POOL_UPSAMPLE
from striate.sw.runtime import image

import rtl_cases
from test_fileformat import pack, split


class UNetStep(nn.Module):
    """A decoder step: upsample a coarse map, concatenate it with a skip map, convolve."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.out = nn.Conv2d(12, 5, 3, padding=1)

    def forward(self, x):
        coarse = F.relu(self.down(x))
        return self.out(torch.cat([self.up(coarse), F.relu(self.skip(x))], 1))


def test_a_unet_step_runs_bit_exact(device, tmp_path):
    model = UNetStep().eval()
    x = np.random.default_rng(0).standard_normal((8, 3, 10, 14)).astype(np.float32)
    program = striate.compile(model, x)
    up = program.graph.layer("up")
    assert up.upsample == (2, 2) and up.macs == 0 and up.out_shape == (8, 10, 14)
    i = program.layers.index(up)
    assert program.descriptors[i].op == OP_DW and program.descriptors[i].pool == POOL_UPSAMPLE
    assert cycles.layer_items(up, program.config) == 2 * 10 * 14      # one per output pixel
    loaded = rtl_cases.check_end_to_end(device, program, model, x[:2], tmp_path / "u.stp")
    assert loaded.graph.layer("up").upsample == (2, 2)


class Forms(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(4, 6, 1)
        self.three = nn.UpsamplingNearest2d(scale_factor=3)

    def forward(self, x):
        y = F.interpolate(torch.sigmoid(self.conv(x)), scale_factor=(1, 2), mode="nearest")
        return F.interpolate(self.three(y), size=(12, 36))


def test_every_form_and_factor_per_axis(device):
    model = Forms().eval()
    x = np.random.default_rng(1).standard_normal((8, 4, 2, 6)).astype(np.float32)
    program = striate.compile(model, x)
    assert [l.upsample for l in program.layers] == [(1, 1), (1, 2), (3, 3), (2, 1)]
    assert program.layers[0].table is not None        # the sigmoid, fused into the conv
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_signals_upsample_along_time(device):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv1d(3, 5, 3), nn.ReLU(), nn.Upsample(scale_factor=3),
                          nn.Conv1d(5, 2, 5)).eval()
    x = np.random.default_rng(2).standard_normal((8, 3, 12)).astype(np.float32)
    program = striate.compile(model, x)
    assert program.layers[1].upsample == (1, 3) and program.graph.output_shape == (2, 26)
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


@pytest.mark.parametrize("layer, error, message", [
    (nn.Upsample(scale_factor=2, mode="bilinear"), striate.UnsupportedLayerError,
     r"Upsample at '0' is not supported: mode must be 'nearest', not 'bilinear'"),
    (nn.Upsample(scale_factor=1.5), striate.UnsupportedLayerError,
     r"Upsample at '0' is not supported: factors must be whole numbers >= 1, not \(1.5, 1.5\)"),
    (nn.Upsample(size=(9, 9)), striate.UnsupportedLayerError,
     r"factors must be whole numbers >= 1, not \(1.5, 1.5\)"),
    (nn.Upsample(scale_factor=(1, 48)), striate.MappingError,
     r"layer '0' \(module 0\): upsampled width must be <= 256 \(AcceleratorConfig.max_width\), "
     r"not 288"),
])
def test_what_upsampling_cannot_take_is_named(layer, error, message):
    with pytest.raises(error, match=message):
        striate.compile(nn.Sequential(layer).eval(), np.random.rand(4, 2, 6, 6))


def test_a_configuration_without_the_depthwise_datapath_refuses_upsampling():
    with pytest.raises(striate.MappingError, match=r"layer '0' \(module 0\): upsampling runs on "
                       r"the depthwise datapath \(AcceleratorConfig.depthwise_kernel\)"):
        striate.compile(nn.Sequential(nn.Upsample(scale_factor=2)).eval(),
                        np.random.rand(4, 2, 6, 6), striate.AcceleratorConfig(depthwise_kernel=0))


def test_illegal_upsampling_descriptors_stop_with_an_error():
    program = striate.compile(nn.Sequential(nn.Upsample(scale_factor=2)).eval(),
                              np.random.rand(4, 4, 5, 6).astype(np.float32))
    (d,) = program.descriptors
    xq = program.quantize_input(np.random.rand(1, 4, 5, 6))[0]

    def changed(**fields):
        return type(d)(**{**d.__dict__, **fields})
    cfg = program.config
    cases = [(changed(k_h=2), memmap.E_SHAPE), (changed(stride_w=2), memmap.E_SHAPE),
             (changed(out_w=cfg.max_width + 2, conv_w=cfg.max_width + 2), memmap.E_LIMIT),
             (changed(out_h=d.out_h + 1), memmap.E_SHAPE),
             (changed(op=1), memmap.E_OP)]
    runs = [{"inputs": [(memmap.address(memmap.PROGRAM), np.array(bad.to_words(), np.uint32)),
                        image.input_image(program, xq)], "layers": 1, "outputs": []}
            for bad, _ in cases]
    for (_, code), res in zip(cases, run_job(cfg, image.program_image(program), runs)):
        assert (res["status"], res["error"]) == (memmap.FAILED, code)


def test_a_file_whose_upsampling_does_not_match_is_refused(tmp_path):
    program = striate.compile(nn.Sequential(nn.Conv2d(2, 4, 1), nn.Upsample(scale_factor=2),
                                            nn.Conv2d(4, 3, 1)).eval(),
                              np.random.rand(4, 2, 5, 5).astype(np.float32))
    path = tmp_path / "u.stp"
    program.save(path)
    header, blob = split(path.read_bytes())
    header["layers"][1]["groups"] = 1           # the copy must be depthwise to run as one
    path.write_bytes(pack(json.dumps(header).encode(), blob))
    with pytest.raises(striate.ProgramFormatError, match=r"layer '1' \(module 1\): an "
                       r"upsampling layer must be a depthwise 1x1 copy without pooling to run on "
                       r"the depthwise datapath, not groups=1 of 4 channels"):
        striate.load_program(path)
