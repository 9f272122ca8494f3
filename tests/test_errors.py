"""Errors are part of the API: bad models, parameters and arguments raise a `StriateError`
subclass with a pinned message (never a raw NumPy, PyTorch or Python exception)."""

import contextlib
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate import ConfigError, QuantizationError, StriateError, UnsupportedLayerError
from striate.sw.mapping import memmap
from striate.sw.runtime.driver import Device, Transport


@contextlib.contextmanager
def raises(error, message):
    """Exactly ``error`` (not a subclass or base) with ``message`` found literally."""
    with pytest.raises(StriateError, match=re.escape(message)) as info:
        yield info
    assert type(info.value) is error, repr(info.value)


def lenet_with(**changes):
    """A fresh LeNet with parameter entries changed: ``{"features.0.weight": (index, value)}``."""
    model = striate.models.load("lenet-digits")
    state = model.state_dict()
    with torch.no_grad():
        for name, (index, value) in changes.items():
            state[name][index] = value
    return model


# -- 1. non-finite parameters, named before BatchNorm folding ---------------------------------

NAN, INF = float("nan"), float("inf")
FINITE_CASES = [
    ({"features.0.weight": ((2, 0, 1, 3), NAN)},
     "layer 'features.0' (module features.0): weight must be finite, found 1 NaN "
     "(at weight[2, 0, 1, 3])"),
    ({"features.4.weight": ((0, 0, 0, 0), -INF)},
     "layer 'features.4' (module features.4): weight must be finite, found 1 infinite value "
     "(at weight[0, 0, 0, 0])"),
    ({"classifier.4.weight": (slice(None), NAN)},          # an all-NaN Linear
     "layer 'classifier.4' (module classifier.4): weight must be finite, found 640 NaN "
     "(first at weight[0, 0])"),
    ({"classifier.2.bias": (slice(3, 5), INF)},
     "layer 'classifier.2' (module classifier.2): bias must be finite, found 2 infinite values "
     "(first at bias[3])"),
    ({"features.1.weight": (7, NAN)},
     "layer 'features.0' (module features.1): weight must be finite, found 1 NaN (at weight[7])"),
    ({"features.5.bias": (0, INF)},
     "layer 'features.4' (module features.5): bias must be finite, found 1 infinite value "
     "(at bias[0])"),
    ({"features.1.running_mean": (4, -INF)},
     "layer 'features.0' (module features.1): running_mean must be finite, found 1 infinite "
     "value (at running_mean[4])"),
    ({"features.5.running_var": (slice(1, 3), NAN)},
     "layer 'features.4' (module features.5): running_var must be finite, found 2 NaN "
     "(first at running_var[1])"),
    ({"features.1.running_var": (5, -0.5)},
     "layer 'features.0' (module features.1): running_var must be >= 0, found 1 negative "
     "(at running_var[5])"),
]


@pytest.mark.parametrize("changes, message", FINITE_CASES)
def test_non_finite_parameters_are_named(changes, message, calibration):
    with raises(QuantizationError, message):
        striate.compile(lenet_with(**changes), calibration[:8])


def test_a_nan_and_an_infinity_are_both_counted():
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([NAN, INF]))
    with raises(QuantizationError, "layer '0' (module 0): bias must be finite, found 1 NaN and "
                                   "1 infinite value (first at bias[0])"):
        striate.compile(model, np.random.rand(2, 1, 8, 8))


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_batchnorm_folding_that_overflows_is_refused(calibration):
    model = lenet_with(**{"features.1.running_var": (2, 0.0)})
    model.features[1].eps = 0.0         # legal in PyTorch; folding divides by zero
    with pytest.raises(QuantizationError, match=re.escape(
            "layer 'features.0' (module features.0, features.1): weight after BatchNorm folding "
            "must be finite, found ") + r"\d+ .*\(first at weight\[2, 0, 0, 0\]\)"):
        striate.compile(model, calibration[:8])


# -- 2. arguments of compile, Program, the driver and open ------------------------------------

def test_compile_refuses_what_is_not_a_model_or_data(lenet, calibration):
    with raises(StriateError, "model must be a torch.nn.Module, not NoneType"):
        striate.compile(None, calibration)
    with raises(StriateError, "model must be a torch.nn.Module, not function"):
        striate.compile(lambda x: x, calibration)
    with raises(StriateError, "calibration data must be an N x C x H x W, N x C x L or N x F array "
                              "of real numbers, not str"):
        striate.compile(lenet, "digits")
    with raises(StriateError, "calibration data must be an N x C x H x W, N x C x L or N x F array "
                              "of real numbers, not list"):
        striate.compile(lenet, [[0.0], [0.0, 1.0]])
    with raises(StriateError, "calibration data must be a non-empty N x C x H x W, N x C x L or N x F "
                              "array, not shape (0, 1, 16, 16)"):
        striate.compile(lenet, calibration[:0])


def test_compile_takes_a_config_or_a_dict(lenet, calibration):
    prog = striate.compile(lenet, torch.as_tensor(calibration[:16]), {"pe_out": 4, "pe_in": 2})
    assert prog.config == striate.AcceleratorConfig(pe_out=4, pe_in=2)
    with raises(ConfigError, "config must be an AcceleratorConfig or a dict of its parameters, "
                             "not list"):
        striate.compile(lenet, calibration, [4, 2])
    with raises(ConfigError, "AcceleratorConfig has no parameters ['pe_outs']"):
        striate.compile(lenet, calibration, {"pe_outs": 4})


def test_quantize_input_checks_shape_type_and_nan(lenet_program):
    with raises(StriateError, "input must be an N x 1 x 16 x 16 array of real numbers, not "
                              "NoneType"):
        lenet_program.quantize_input(None)
    with raises(StriateError, "input must be N x 1 x 16 x 16, not 1 x 16 x 16"):
        lenet_program.quantize_input(np.zeros((1, 16, 16)))
    with raises(StriateError, "input must be N x 1 x 16 x 16, not 2 x 1 x 8 x 8"):
        lenet_program.quantize_input(torch.zeros(2, 1, 8, 8))
    x = np.zeros((2, 1, 16, 16), np.float32)
    x[1, 0, 3, :3] = np.nan
    with raises(StriateError, "input must be free of NaN, found 3 NaN"):
        lenet_program.quantize_input(x)
    x[1, 0, 3, :3] = [np.inf, -np.inf, 1e30]          # infinities saturate like large values
    assert lenet_program.quantize_input(x)[1, 0, 3, :3].tolist() == [127, -128, 127]
    assert lenet_program.quantize_input(x[:0]).shape == (0, 1, 16, 16)


def test_run_reference_checks_its_input(lenet_program):
    with raises(StriateError, "golden model input must be int8, not NoneType"):
        lenet_program.run_reference(None)
    with raises(StriateError, "golden model input must be int8, not list"):
        lenet_program.run_reference([[1, 2], [3]])
    with raises(StriateError, "golden model input must be int8, not int16"):
        lenet_program.run_reference(np.zeros((1, 1, 16, 16), np.int16))
    with raises(StriateError, "golden model input must be N x 1 x 16 x 16, not 1 x 16 x 16"):
        lenet_program.run_reference(np.zeros((1, 16, 16), np.int8))
    with raises(StriateError, "golden model input must be N x 1 x 16 x 16, not scalar"):
        lenet_program.run_reference(np.int8(3))
    with raises(StriateError, "return_all must be True or False, not 'yes'"):
        lenet_program.run_reference(np.zeros((1, 1, 16, 16), np.int8), return_all="yes")


def test_run_reference_on_an_empty_batch(lenet_program):
    empty = np.zeros((0, 1, 16, 16), np.int8)
    y = lenet_program.run_reference(empty)
    assert y.shape == (0, 10) and y.dtype == np.int8
    every = lenet_program.run_reference(empty, return_all=True)
    assert [a.shape for a in every] == [(0, *l.out_shape) for l in lenet_program.layers[:-1]] \
        + [(0, 10)]
    assert all(a.dtype == np.int8 for a in every)


class FakeTransport(Transport):
    """Answers CONFIG_ID for ``config``, reads zeros elsewhere, records writes."""

    def __init__(self, config):
        self.config, self.writes = config, []

    def write(self, addr, words):
        self.writes.append(addr)

    def read(self, addr, count=1):
        words = np.zeros(count, np.uint32)
        if addr == memmap.address(memmap.REG, memmap.CONFIG_ID):
            words[0] = memmap.config_id(self.config)
        return words

    def wait(self, cycles):
        raise AssertionError("nothing may run")


@pytest.fixture
def fake_device(lenet_program):
    return Device(FakeTransport(lenet_program.config), lenet_program.config, "fake device")


BAD_RUNS = [
    (dict(program=None), "program must be a Program, not NoneType"),
    (dict(program="lenet"), "program must be a Program, not str"),
    (dict(xq=None), "input must be int8 N x 1 x 16 x 16, not NoneType"),
    (dict(xq=[[1, 2], [3]]), "input must be int8 N x 1 x 16 x 16, not list"),
    (dict(xq=np.zeros((2, 1, 16, 16), np.int16)),
     "input must be int8 N x 1 x 16 x 16, not int16 2 x 1 x 16 x 16"),
    (dict(xq=np.zeros((1, 16, 16), np.int8)), "input must be int8 N x 1 x 16 x 16, not int8 1 x "
                                              "16 x 16"),
    (dict(xq=torch.zeros(2, 1, 16, 16)),
     "input must be int8 N x 1 x 16 x 16, not float32 2 x 1 x 16 x 16"),
    (dict(timeout_cycles=-5), "timeout_cycles must be a positive integer or None, not -5"),
    (dict(timeout_cycles=0), "timeout_cycles must be a positive integer or None, not 0"),
    (dict(timeout_cycles=1e6), "timeout_cycles must be a positive integer or None, not 1000000.0"),
    (dict(timeout_cycles=True), "timeout_cycles must be a positive integer or None, not True"),
    (dict(timeout_cycles="100"), "timeout_cycles must be a positive integer or None, not '100'"),
    (dict(return_all="yes"), "return_all must be True or False, not 'yes'"),
    (dict(return_all=2), "return_all must be True or False, not 2"),
    (dict(progress=5), "progress must be a callable or None, not 5"),
]


@pytest.mark.parametrize("override, message", BAD_RUNS)
def test_run_checks_its_arguments_before_touching_the_device(override, message, fake_device,
                                                             lenet_program):
    args = dict(program=lenet_program, xq=np.zeros((2, 1, 16, 16), np.int8)) | override
    with raises(StriateError, message):
        fake_device.run(args.pop("program"), args.pop("xq"), **args)
    assert fake_device.transport.writes == []


def test_load_refuses_what_is_not_a_program(fake_device):
    with raises(StriateError, "program must be a Program, not NoneType"):
        fake_device.load(None)


def test_driver_runs_an_empty_batch_like_the_golden_model(fake_device, lenet_program):
    """Shapes and dtypes hold for N = 0 as for N > 0; nothing is started."""
    empty = np.zeros((0, 1, 16, 16), np.int8)
    y = fake_device.run(lenet_program, empty, return_all=False, timeout_cycles=np.int64(10),
                        progress=print)
    want = lenet_program.run_reference(empty)
    assert y.shape == want.shape == (0, 10) and y.dtype == want.dtype == np.int8
    every = fake_device.run(lenet_program, empty, return_all=np.bool_(True))
    golden = lenet_program.run_reference(empty, return_all=True)
    assert len(every) == len(golden) and every[-1] is not None
    for got, want in zip(every, golden):
        assert got is None or (got.shape, got.dtype) == (want.shape, want.dtype)
    assert fake_device.last_run is None


def test_open_checks_backend_config_and_link_options():
    with raises(StriateError, "backend must be one of verilator, pysim, cocotb or serial:PORT, "
                              "not None"):
        striate.open(None)
    with raises(ConfigError, "config must be an AcceleratorConfig or a dict of its parameters, "
                             "not tuple"):
        striate.open("verilator", (16, 4))
    with raises(ConfigError, "AcceleratorConfig.pe_out must be a power of two, not 3"):
        striate.open("verilator", {"pe_out": 3})
    with raises(ConfigError, "AcceleratorConfig has no parameters ['lanes']"):
        striate.open("verilator", {"lanes": 4})
    with raises(StriateError, "baudrate must be a positive integer, not 0"):
        striate.open("serial:/dev/nonexistent", baudrate=0)
    with raises(StriateError, "clock_hz must be a positive number, not -12000000.0"):
        striate.open("serial:/dev/nonexistent", clock_hz=-12e6)


def test_verilator_takes_a_config_dict_and_an_empty_batch(lenet_program, digits_test):
    """On the real backend (the default configuration, given as a dict): an empty batch, then
    images, match the golden model."""
    with striate.open("verilator", {"pe_out": 16, "pe_in": 4}) as dev:
        assert dev.config == striate.AcceleratorConfig()
        xq = lenet_program.quantize_input(digits_test[0][:3])
        for batch in (xq[:0], xq):
            got = dev.run(lenet_program, batch)
            want = lenet_program.run_reference(batch)
            assert got.dtype == np.int8
            np.testing.assert_array_equal(got, want)
        assert dev.last_run.cycles > 0
        one = dev.run(lenet_program, xq[:1], return_all=True)
        none = dev.run(lenet_program, xq[:0], return_all=True)
        assert [a is None for a in none] == [a is None for a in one]
        assert [a.shape[1:] for a in none if a is not None] == \
            [a.shape[1:] for a in one if a is not None]
        assert dev.last_run is None


# -- 3. a model the compiler cannot take is named, even when the data is not N x C x H x W ----

class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x):
        return self.pool(F.relu(self.conv1(x)))


CONV3D = ("Conv3d at 'conv1' is not supported: 3-D layers are not supported yet, only 2-D ones on "
          "N x C x H x W inputs and 1-D ones on N x C x L inputs")


@pytest.mark.parametrize("shape", [(4, 1, 6, 6, 6), (4, 1, 16), (4, 1, 6, 6)])
def test_a_conv3d_model_is_named_whatever_the_data(shape):
    with raises(UnsupportedLayerError, CONV3D):
        striate.compile(Conv3dNet(), np.random.rand(*shape).astype(np.float32))


class SoftsignNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return F.softsign(self.conv(x)).flatten(1)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softplus()), "Softplus at '1' is not supported"),
    (SoftsignNet(), "softsign at 'softsign' is not supported"),
])
def test_the_first_unsupported_op_is_named_before_the_data_is_blamed(model, message):
    with raises(UnsupportedLayerError, message):
        striate.compile(model, np.random.rand(4, 1, 1, 8, 8).astype(np.float32))


def test_a_layer_on_the_wrong_rank_is_named():
    with raises(UnsupportedLayerError, "BatchNorm1d at '1' is not supported: expects vectors of 4 "
                                       "features or 4 x L signals, not shape (4, 6, 6)"):
        striate.compile(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm1d(4)),
                        np.random.rand(4, 1, 8, 8).astype(np.float32))


def test_a_linear_model_on_vectors_compiles():
    """An MLP on N x F vectors compiles as it is (Linear layers on F x 1 x 1 maps), as does the
    same model behind a flatten on N x F x 1 x 1 inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = np.random.default_rng(0).random((8, 16)).astype(np.float32)
    prog = striate.compile(model, x)
    assert prog.graph.input_shape == (16,)
    assert prog.run_reference(prog.quantize_input(x)).shape == (8, 2)
    prog = striate.compile(nn.Sequential(nn.Flatten(), model), x.reshape(8, 16, 1, 1))
    assert prog.run_reference(np.ones((2, 16, 1, 1), np.int8)).shape == (2, 2)


def test_a_supported_model_blames_the_data():
    with raises(StriateError, "calibration data must be a non-empty N x C x H x W, N x C x L or "
                              "N x F array, not shape (4, 1, 1, 8, 8)"):
        striate.compile(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()),
                        np.random.rand(4, 1, 1, 8, 8))
    with raises(UnsupportedLayerError, "Conv2d at '0' is not supported: expects 1 x H x W input, "
                                       "not (8, 8)"):      # 4 signals of 8 channels
        striate.compile(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), np.random.rand(4, 8, 8))


def test_program_files_paths_and_outputs_are_checked(lenet_program, tmp_path):
    with raises(striate.ProgramFormatError, "program file path must be a file name, not None"):
        striate.load_program(None)
    with raises(StriateError, "program file path must be a file name, not None"):
        lenet_program.save(None)
    with raises(StriateError, f"cannot write program file '{tmp_path}/no/such/x.stp': "):
        lenet_program.save(tmp_path / "no" / "such" / "x.stp")
    assert list(tmp_path.iterdir()) == []
    with raises(StriateError, "output must be an int8 array, not str"):
        lenet_program.dequantize_output("abc")
    with raises(StriateError, "output must be an int8 array, not float32 2 x 10"):
        lenet_program.dequantize_output(np.zeros((2, 10), np.float32))
    with raises(ConfigError, "AcceleratorConfig parameters must be a dict, not NoneType"):
        striate.AcceleratorConfig.from_dict(None)
