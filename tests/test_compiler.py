"""Compiler: accuracy gates, pass equivalence, lowering coverage and pinned errors."""

import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate import MappingError, QuantizationError, StriateError, UnsupportedLayerError
from striate.sw import compiler
from striate.sw.golden import model as golden
from striate.sw.ir import passes
from striate.sw.mapping import unfold
from striate.sw.frontend.float_ref import run_float
from striate.sw.ir.quantize import quantize_graph


def torch_out(model, x):
    with torch.no_grad():
        return model.eval()(torch.as_tensor(x)).double().numpy()


def test_lenet_int8_accuracy_gate(lenet, lenet_program, digits_test):
    x, y = digits_test
    float_acc = float(np.mean(torch_out(lenet, x).argmax(1) == y))
    yq = lenet_program.run_reference(lenet_program.quantize_input(x))
    int8_acc = float(np.mean(yq.argmax(1) == y))
    print(f"digits test split: float {float_acc:.4f}, int8 golden {int8_acc:.4f}")
    assert int8_acc >= 0.97
    assert int8_acc >= float_acc - 0.01


def test_lenet_compiles_to_four_fused_layers(lenet_program):
    got = [(l.op, l.pool, l.lo, l.hi, l.in_shape, l.out_shape) for l in lenet_program.layers]
    assert got == [("conv", "max", 0, 127, (25, 16, 16), (16, 8, 8)),   # host-unfolded 5x5
                   ("conv", "max", 0, 127, (16, 8, 8), (32, 4, 4)),
                   ("conv", "none", 0, 127, (32, 4, 4), (64, 1, 1)),    # linear: 4x4 kernel
                   ("conv", "none", -128, 127, (64, 1, 1), (10, 1, 1))]
    assert lenet_program.graph.input_im2col == (5, 5, 1, 1, 2, 2)
    assert [l.kernel for l in lenet_program.layers] == [(1, 1), (5, 5), (4, 4), (1, 1)]
    assert lenet_program.layers[0].sources == ("features.0", "features.1", "features.2",
                                               "features.3")


class Zoo(nn.Module):
    """Every supported functional form and module in one chain."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, padding="same")
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, (3, 2), stride=(2, 1), padding=(1, 0))
        self.pool = nn.AvgPool2d(2, stride=1, padding=1)
        self.c3 = nn.Conv2d(8, 16, 1)
        self.bn3 = nn.BatchNorm2d(16)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 5)
        self.idn = nn.Identity()

    def forward(self, x):
        x = F.max_pool2d(self.bn1(self.c1(x)), 3, stride=2, padding=1)
        x = F.relu6(x)
        x = torch.relu(self.pool(self.c2(x)))
        x = F.relu(self.bn3(self.c3(x)))
        x = self.idn(self.gap(x))
        x = x.view(x.size(0), -1)
        return torch.sigmoid(self.fc(F.dropout(self.drop(x), training=self.training)))


def _randomize_bn(model):
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def zoo():
    torch.manual_seed(1)
    return _randomize_bn(Zoo()), torch.rand(64, 2, 14, 13).numpy()


@pytest.mark.parametrize("name", ["zoo", "lenet"])
def test_float_passes_keep_the_float_reference(name, zoo, lenet, calibration):
    model, x = zoo if name == "zoo" else (lenet, calibration[:64])
    from striate.sw.frontend.trace import trace
    nodes = trace(model, x.shape[1:])
    before = run_float(nodes, x)
    np.testing.assert_allclose(before, torch_out(model, x), rtol=1e-4, atol=1e-5)
    for float_pass in compiler.FLOAT_PASSES:
        after_nodes = float_pass(nodes)
        assert len(after_nodes) <= len(nodes)
        np.testing.assert_allclose(run_float(after_nodes, x), before, rtol=1e-9, atol=1e-9)
        nodes = after_nodes
    assert not any(n.kind == "bn" for n in nodes)


@pytest.mark.parametrize("name", ["zoo", "lenet"])
def test_integer_passes_keep_the_golden_model_bit_exact(name, zoo, lenet, calibration,
                                                        digits_test):
    model, x = zoo if name == "zoo" else (lenet, calibration)
    nodes, x = compiler.lower(model, x)
    graph = quantize_graph(nodes, x, x.shape[1:])
    images = x if name == "zoo" else digits_test[0]
    xq = striate.sw.ir.numerics.quantize(images, graph.input_scale)
    reference = golden.run_graph(graph, xq)
    config_passes = (lambda g: unfold.im2col_input(g, striate.AcceleratorConfig(pe_in=4)),)
    for integer_pass in passes.INTEGER_PASSES + config_passes:
        after = integer_pass(graph)
        if name == "zoo":   # the zoo exercises every pass
            assert _structure(after) != _structure(graph), integer_pass
        np.testing.assert_array_equal(golden.run_graph(after, xq), reference)
        graph = after
    assert {l.op for l in graph.layers} == {"conv"}


def _structure(graph):
    return [(l.op, l.pool, l.lo, l.hi, l.in_shape, l.out_shape) for l in graph.layers], \
        graph.input_im2col


def _sqnr_db(ref, got):
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))


def test_zoo_int8_tracks_float(zoo):
    model, x = zoo
    prog = striate.compile(model, x)
    got = [(l.op, l.pool, l.lo) for l in prog.layers]
    assert got == [("conv", "max", 0), ("conv", "avg", -128), ("conv", "none", 0),
                   ("conv", "avg", 0), ("conv", "none", -128)]
    y = prog.dequantize_output(prog.run_reference(prog.quantize_input(x)))
    assert y.shape == (64, 5)
    assert _sqnr_db(torch_out(model, x), y) > 25


def test_classifier_head_after_global_average_pool():
    """Flatten of a C x 1 x 1 map, then several linear layers (the usual classifier head)."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU6(),
                          nn.Linear(12, 4)).eval()
    x = torch.randn(64, 3, 9, 7).numpy()
    prog = striate.compile(model, x)
    assert [l.in_shape for l in prog.layers][1:] == [(8, 1, 1), (16, 1, 1), (12, 1, 1)]
    y = prog.dequantize_output(prog.run_reference(prog.quantize_input(x)))
    assert _sqnr_db(torch_out(model, x), y) > 25


@pytest.mark.parametrize("head", [True, False], ids=["conv-gap", "gap-on-input"])
def test_average_pooling_output_has_its_own_scale(head):
    """A global average spans a small part of its input's range: with the input's scale it
    kept a few int8 levels (12.6 dB, below 0 dB on the input itself)."""
    torch.manual_seed(5)
    layers = [nn.Conv2d(1, 24, 3, stride=2)] if head else []
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(24 if head else 1, 10)).eval()
    x = torch.randn(64, 1, 16, 16).numpy()
    prog = striate.compile(model, x)
    y = prog.dequantize_output(prog.run_reference(prog.quantize_input(x)))
    assert _sqnr_db(torch_out(model, x), y) > 35


def test_compile_restores_training_mode(zoo):
    model, x = zoo
    model.train()
    striate.compile(model, x)
    assert model.training
    model.eval()


class Wrap(nn.Module):
    def __init__(self, *mods, forward=None):
        super().__init__()
        self.body = nn.Sequential(*mods)
        self._fwd = forward

    def forward(self, x):
        return self._fwd(self, x) if self._fwd else self.body(x)


def _residual(self, x):
    y = self.body(x)
    return y + x


def _bare_linear(self, x):
    return self.body(x)


CASES = [
    (Wrap(nn.Conv2d(1, 4, 3), nn.Softplus()), UnsupportedLayerError,
     "Softplus at 'body.1' is not supported"),
    (Wrap(nn.Conv2d(1, 4, 3, dilation=4, padding=1)), MappingError,
     r"layer 'body.0' \(module body.0\): kernel size must be <= 7 "
     r"\(AcceleratorConfig.max_kernel\), not 9x9 \(a 4x4 dilated kernel's span\)"),
    (Wrap(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")), UnsupportedLayerError,
     "padding_mode must be 'zeros', not 'reflect'"),
    (Wrap(nn.ReLU(), nn.BatchNorm2d(1)), UnsupportedLayerError,
     "BatchNorm2d at 'body.1' is not supported: it must directly follow a Conv2d"),
    (Wrap(nn.AvgPool2d(2, ceil_mode=True)), UnsupportedLayerError,
     r"AvgPool2d at 'body.0' is not supported: ceil_mode=True \(supported for max pooling "
     r"only\)"),
    (Wrap(nn.MaxPool2d(2, padding=2)), UnsupportedLayerError,
     "MaxPool2d at 'body.0' is not supported: padding must be at most half the 2x2 window, "
     "not 2x2"),
    (Wrap(nn.AdaptiveAvgPool2d(2)), UnsupportedLayerError,
     "AdaptiveAvgPool2d at 'body.0' is not supported: output_size must be 1, not 2"),
    (Wrap(nn.AvgPool2d(3, padding=1, count_include_pad=False)), UnsupportedLayerError,
     "count_include_pad=False with padding"),
    (Wrap(nn.Linear(8, 2), forward=_bare_linear), UnsupportedLayerError,
     r"Linear at 'body.0' is not supported: expects a flat input of 8 features, not shape "
     r"\(1, 8, 8\)"),
    (Wrap(nn.Conv2d(1, 4, 3, padding=1), forward=_residual), UnsupportedLayerError,
     r"add at 'add' is not supported: adds 'body.0' \(4 x 8 x 8\) and the input \(1 x 8 x 8\): "
     r"the shapes must be equal \(no broadcasting\)"),
    (Wrap(nn.Conv2d(1, 4, 3), nn.Flatten(0)), UnsupportedLayerError,
     r"only flatten\(start_dim=1, end_dim=-1\)"),
    (Wrap(nn.Conv2d(3, 4, 3)), UnsupportedLayerError,
     r"Conv2d at 'body.0' is not supported: expects 3 x H x W input, not \(1, 8, 8\)"),
]


@pytest.mark.parametrize("model, error, message", CASES)
def test_refusals_name_the_op_and_module_path(model, error, message):
    with pytest.raises(error, match=message):
        striate.compile(model, np.random.rand(4, 1, 8, 8).astype(np.float32))


def test_refuses_a_layer_whose_accumulator_could_overflow():
    model = Wrap(nn.Flatten(), nn.Linear(133_000, 2))
    with pytest.raises(QuantizationError, match=r"layer 'body.1': int32 accumulator may overflow "
                                                r"on channel \d: K \* max\|w\| \* max\|x\| \+ "
                                                r"\|bias\| = \d+ must be < 2\*\*31"):
        striate.compile(model, np.random.rand(2, 1, 1, 133_000).astype(np.float32))


def test_refuses_bad_calibration():
    model = Wrap(nn.Conv2d(1, 1, 3))
    with pytest.raises(StriateError, match=r"Conv2d at 'body.0' is not supported: expects 1 x H x "
                                           r"W input, not \(8,\)"):
        striate.compile(model, np.zeros((8, 8), np.float32))     # 8 vectors of 8 features
    with pytest.raises(StriateError, match=r"must be a non-empty N x C x H x W, N x C x L or "
                                           r"N x F array, not shape \(0, 1, 8, 8\)"):
        striate.compile(model, np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(StriateError, match="must be finite"):
        striate.compile(model, np.full((1, 1, 8, 8), np.nan, np.float32))


WHERE = "layer 'features.{0}' (module features.{0}, features.{1}, features.{2}, features.{3}): "
MAPPING_CASES = [
    (dict(max_width=8), WHERE.format(0, 1, 2, 3) +
     "input width must be <= 8 (AcceleratorConfig.max_width), not 16"),
    (dict(max_height=8), WHERE.format(0, 1, 2, 3) +
     "input height must be <= 8 (AcceleratorConfig.max_height), not 16"),
    (dict(max_kernel=3), WHERE.format(4, 5, 6, 7) +
     "kernel size must be <= 3 (AcceleratorConfig.max_kernel), not 5x5"),
    # on chip (with external memory these stream, in chunks of input channels where a
    # one-pixel tile or 16 output channels' weights exceed half the memory): the unfolded
    # first layer (25x16x16, 7168 bytes) does not fit, so it stays 1x16x16
    (dict(act_bytes=512, ext_bytes=0), WHERE.format(0, 1, 2, 3) +
     "input map 1x16x16 needs 1024 bytes, must fit the activation memory of 512 bytes"),
    # 16x28 (conv1, unfolded) + 32x16x25 (conv2) + 64x32x16 (fc1) + 16x64 (fc2, 10 rows padded)
    (dict(weight_bytes=4096, ext_bytes=0), "weights need 47040 bytes, must fit the weight memory of 4096 "
                              "bytes"),
    # (on chip: with external memory the layers would stream, their parameters in tiles)
    (dict(param_entries=64, ext_bytes=0), "channel parameters need 128 entries, must fit 64"),
    (dict(program_depth=3), "program must have 1 to 3 layers (AcceleratorConfig.program_depth; "
                            "concatenations take none), not 4"),
]


@pytest.mark.parametrize("overrides, message", MAPPING_CASES)
def test_mapping_refusals_name_the_layer_and_limit(overrides, message, lenet, calibration):
    with pytest.raises(MappingError, match=re.escape(message)):
        striate.compile(lenet, calibration[:16], striate.AcceleratorConfig(**overrides))


def test_mapping_on_a_tiny_config(lenet, calibration, digits_test):
    """A 1-MAC config maps the same network with the same numerics."""
    small = striate.AcceleratorConfig(pe_out=1, pe_in=1)
    prog = striate.compile(lenet, calibration, small)
    default = striate.compile(lenet, calibration)
    assert prog.config.macs_per_cycle == 1 and prog.plan.weight_total < default.plan.weight_total
    xq = prog.quantize_input(digits_test[0][:50])
    np.testing.assert_array_equal(prog.run_reference(xq), default.run_reference(xq))
