"""Graphs that branch: tracing residual adds, concatenations, fan-out and vector inputs into the
DAG IR, quantizing them, and the passes on them (golden model unchanged bit for bit)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate import QuantizationError, UnsupportedLayerError
from striate.models import reference
from striate.sw import compiler
from striate.sw.frontend.float_ref import run_float
from striate.sw.frontend.trace import trace
from striate.sw.golden import model as golden
from striate.sw.ir import numerics, passes
from striate.sw.ir.graph import INPUT
from striate.sw.ir.quantize import quantize_graph

import rtl_cases


class Net(nn.Module):
    """Modules ``a``, ``b`` (3 -> 3 channel convolutions) and a forward given as a function."""

    def __init__(self, forward, channels=3):
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


def _randomize_bn(model):
    torch.manual_seed(3)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _kinds(nodes):
    return [(n.kind, n.inputs) for n in nodes]


ADD_FORMS = {
    "x + y": lambda s, x: s.a(x) + s.b(x),
    "torch.add": lambda s, x: torch.add(s.a(x), s.b(x)),
    ".add": lambda s, x: s.a(x).add(s.b(x)),
    ".add_": lambda s, x: s.a(x).add_(s.b(x)),
}


@pytest.mark.parametrize("form", ADD_FORMS)
def test_add_forms_trace_to_one_add_of_both_producers(form):
    nodes = trace(Net(ADD_FORMS[form]).eval(), (3, 6, 5))
    assert [n.kind for n in nodes] == ["conv", "conv", "add"]
    assert nodes[2].inputs == ("a", "b")


def test_in_place_add_and_shortcuts():
    """``y += shortcut(x)`` with an ``nn.Identity`` shortcut reads the input itself; fan-out of
    the input to both branches."""
    def forward(s, x):
        y = s.a(x)
        y += s.shortcut(x)
        return s.relu(y)
    nodes = trace(Net(forward).eval(), (3, 4, 4))
    assert _kinds(nodes) == [("conv", (INPUT,)), ("add", ("a", INPUT)), ("relu", ("add",))]


def test_in_place_ops_rebind_the_tensor_for_later_readers():
    """After an in-place ReLU, later readers of its input see the ReLU's output, as in
    PyTorch: the float reference equals the module's own output."""
    def forward(s, x):
        y = s.a(x)
        z = s.relu(y)           # in place: y is z from here on
        return y + s.b(z)
    model = Net(forward).eval()
    nodes = trace(model, (3, 5, 5))
    assert nodes[-1].inputs == ("relu", "b")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    with torch.no_grad():
        want = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(run_float(nodes, x), want, rtol=1e-4, atol=1e-4)


def test_a_module_called_twice_gets_two_names():
    nodes = trace(Net(lambda s, x: s.relu(s.a(s.relu(x)))).eval(), (3, 4, 4))
    assert [n.name for n in nodes] == ["relu", "a", "relu#2"]
    assert nodes[2].sources == ("relu",)


@pytest.mark.parametrize("cat", [
    lambda s, x: torch.cat([s.a(x), s.b(x), x], 1),
    lambda s, x: torch.cat((s.a(x), s.b(x), x), dim=-3),
    lambda s, x: torch.concat([s.a(x), s.b(x), x], dim=1),
])
def test_concatenation_along_channels(cat):
    nodes = trace(Net(cat).eval(), (3, 4, 4))
    assert _kinds(nodes)[-1] == ("concat", ("a", "b", INPUT))
    assert nodes[-1].out_shape == (9, 4, 4)


def test_unused_branches_are_left_out():
    def forward(s, x):
        s.b(x)                      # computed, never used
        return s.a(x)
    assert [n.name for n in trace(Net(forward).eval(), (3, 4, 4))] == ["a"]


REFUSALS = [
    (lambda s, x: s.a(x) + 1, "add at 'add' is not supported: only the sum of two tensors"),
    (lambda s, x: torch.add(s.a(x), x, alpha=2), "add at 'add' is not supported: alpha must be 1"),
    (lambda s, x: s.a(x) + F.max_pool2d(x, 2), r"add at 'add' is not supported: adds 'a' "
                                               r"\(3 x 4 x 4\) and 'max_pool2d' \(3 x 2 x 2\): "
                                               r"the shapes must be equal \(no broadcasting\)"),
    (lambda s, x: torch.cat([s.a(x), x], 2), r"cat at 'cat' is not supported: only concatenation "
                                             r"along channels \(dim=1\) is supported, not dim=2"),
    (lambda s, x: torch.cat([s.a(x), F.max_pool2d(x, 2)], 1),
     r"cat at 'cat' is not supported: joins 'a' \(3 x 4 x 4\), 'max_pool2d' \(3 x 2 x 2\): all "
     r"but the channels must be equal"),
    (lambda s, x: torch.mul(s.a(x), x), "mul at 'mul' is not supported"),
    (lambda s, x: s.a(x) * s.b(x), "mul at 'mul' is not supported"),
]


@pytest.mark.parametrize("forward, message", REFUSALS)
def test_refusals_name_the_op_its_path_and_producers(forward, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        striate.compile(Net(forward).eval(), np.random.rand(2, 3, 4, 4))


def test_batchnorm_after_a_tensor_others_read_is_refused():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y
    with pytest.raises(UnsupportedLayerError, match="BatchNorm2d at 'bn' is not supported: it must "
                                                    "directly follow a Conv2d to be folded, not "
                                                    "'conv', which other layers read too"):
        striate.compile(M().eval(), np.random.rand(2, 1, 4, 4))


def test_a_flatten_may_feed_only_clamps_and_linear_layers():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = torch.flatten(x, 1)
            return self.fc(y) + y
    with pytest.raises(UnsupportedLayerError, match="layer 'add' is not supported after a flatten"):
        striate.compile(M().eval(), np.random.rand(2, 2, 2, 2))


MODELS = {
    "resnet8": (reference.resnet8, (3, 32, 32)),
    "autoencoder": (reference.fc_autoencoder, (640,)),
    "fire": (reference.fire_stack, (3, 32, 32)),
    "ds-cnn": (reference.ds_cnn, (1, 49, 10)),
    "lenet5": (reference.lenet5, (1, 32, 32)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def lowered(request):
    build, shape = MODELS[request.param]
    torch.manual_seed(0)
    model = _randomize_bn(build())
    x = np.random.default_rng(1).standard_normal((32, *shape)).astype(np.float32)
    return request.param, model, x


def test_float_passes_keep_the_float_reference(lowered):
    _, model, x = lowered
    nodes = trace(model, x.shape[1:])
    before = run_float(nodes, x)
    with torch.no_grad():
        np.testing.assert_allclose(before, model(torch.from_numpy(x)).numpy(), rtol=1e-4,
                                   atol=1e-4)
    for float_pass in compiler.FLOAT_PASSES:
        after = float_pass(nodes)
        # BatchNorm folds into the conv before it, Keras 'same' padding into the one after
        folded = "bn" if float_pass is compiler.fold_batchnorm else "pad"
        assert len(after) == len(nodes) - sum(n.kind == folded for n in nodes)
        np.testing.assert_allclose(run_float(after, x), before, rtol=1e-9, atol=1e-9)
        nodes = after


def test_integer_passes_keep_the_golden_model_bit_exact(lowered):
    _, model, x = lowered
    nodes, x = compiler.lower(model, x)
    graph = quantize_graph(nodes, x, x.shape[1:])
    xq = numerics.quantize(x, graph.input_scale)
    want = golden.run_graph(graph, xq)
    for integer_pass in passes.INTEGER_PASSES:
        graph = integer_pass(graph)
        assert graph.check_topology() is None
        np.testing.assert_array_equal(golden.run_graph(graph, xq), want)
    assert {l.op for l in graph.layers} <= {"conv", "add", "concat"}


def test_int8_tracks_float(lowered):
    """The quantized graph follows the float model: at least 35 dB SQNR on random weights."""
    name, model, x = lowered
    graph = compiler.compile_graph(model, x)
    y = golden.run_graph(graph, numerics.quantize(x, graph.input_scale)) * graph.output_scale
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - y) ** 2).sum())
    assert sqnr > 35, (name, sqnr)


def test_fused_graph_shapes():
    """ResNet-8's fused graph: stem, 3 blocks (2 convolutions, a projection on 2 of them, an
    add with its ReLU fused), the average pool fused into nothing (it follows an add) and the
    classifier; the autoencoder is a chain of ten linear layers on a vector input."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32))
    graph = compiler.compile_graph(reference.resnet8(), x)
    adds = [l for l in graph.layers if l.op == "add"]
    assert len(adds) == 3 and all(l.lo == 0 for l in adds)
    assert sum(l.op == "conv" and l.kernel == (1, 1) and l.stride == (2, 2)
               for l in graph.layers) == 2
    assert not graph.is_chain
    ae = compiler.compile_graph(reference.fc_autoencoder(), x.reshape(8, -1)[:, :640])
    assert ae.is_chain and len(ae.layers) == 10 and ae.input_shape == (640,)


def test_concatenation_producers_take_its_scale():
    """Fire modules: both expands write at the concatenation's scale (no requantizing copy);
    an input that the network input or another reader supplies is requantized first."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32))
    graph = compiler.compile_graph(reference.fire_stack(), x)
    for cat in (l for l in graph.layers if l.op == "concat"):
        assert all(graph.scale_of(t) == cat.out_scale for t in cat.inputs)
    assert not any(".rescale" in l.name for l in graph.layers)

    def forward(s, x):
        y = s.a(x)
        return torch.cat([F.relu(y), x, s.b(y)], 1)
    model = Net(forward).eval()
    with torch.no_grad():       # b's output is far wider than a's, a's far wider than x's
        model.a.weight.mul_(10)
        model.b.weight.mul_(10)
    x = np.random.default_rng(0).standard_normal((8, 3, 5, 5))
    graph = compiler.compile_graph(model, x)
    cat = graph.layer("cat")
    assert cat.inputs == ("cat.rescale0", "cat.rescale1", "b")
    assert graph.layer("cat.rescale0").inputs == ("relu",)
    assert graph.layer("cat.rescale1").inputs == (INPUT,)
    assert all(graph.scale_of(t) == cat.out_scale for t in cat.inputs)
    y = golden.run_graph(graph, numerics.quantize(x, graph.input_scale)) * graph.output_scale
    with torch.no_grad():
        ref = model(torch.from_numpy(x).float()).numpy()
    assert np.abs(y - ref).max() <= 3 * cat.out_scale


def test_add_multipliers_refuse_inputs_that_cancel():
    assert numerics.add_multipliers(2.0 ** 14, 1.0)[2] == 1
    with pytest.raises(QuantizationError, match="the inputs cancel on the calibration data"):
        numerics.add_multipliers(2.0 ** 15, 1.0)


# -- on the RTL ------------------------------------------------------------------------------

def test_resnet8_runs_bit_exact_on_the_rtl(device):
    """MLPerf Tiny ResNet-8 as its reference int8 file computes it (stride-2 layers padded 0
    before and 1 after) on the default configuration: every layer bit-exact, the cycle model
    exact, no padding copies, at least 85 % of the PE array busy over the whole network."""
    torch.manual_seed(0)
    model = _randomize_bn(reference.resnet8())
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    program = striate.compile(model, x)
    assert sum(l.op == "add" for l in program.layers) == 3
    assert sum(l.pad_extra == (1, 1) for l in program.layers) == 2
    assert not any(l.is_copy and l.pool == "none" for l in program.layers)   # no pad copy
    stats = rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))
    assert stats.utilization["network"] >= 0.85


def test_ds_cnn_runs_bit_exact_on_the_rtl(device):
    """MLPerf Tiny DS-CNN as its reference int8 file computes it (the 10 x 4 stride-2 first
    layer padded (4, 5) x (1, 1), 25 x 5 average pool) on the default configuration: every
    layer bit-exact, the cycle model exact, the depthwise layers on the depthwise datapath,
    at least 75 % of the PE array busy over the whole network."""
    torch.manual_seed(0)
    model = _randomize_bn(reference.ds_cnn())
    x = np.random.default_rng(0).standard_normal((16, 1, 49, 10)).astype(np.float32)
    program = striate.compile(model, x)
    assert sum(program.plan.depthwise) == 4 and program.graph.input_im2col[6:] == (1, 0)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    y = program.run_reference(program.quantize_input(x)) * program.output_scale
    assert np.abs(y - ref).max() <= 0.1 * np.abs(ref).max()
    stats = rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))
    assert stats.utilization["network"] >= 0.75


def test_lenet5_runs_bit_exact_on_the_rtl(device):
    """LeNet-5's shapes on 32 x 32: every layer bit-exact and the cycle model exact. Its first
    layers have fewer output channels (6) than PE rows (16): the first runs in pixel pairs
    (each item the two columns of a 2 x 2 pooling window); the second reads its 6 input
    channels with merged lanes (40 items a pixel instead of 50); 81 % of the array busy."""
    torch.manual_seed(0)
    model = reference.lenet5()
    x = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    program = striate.compile(model, x)
    assert [l.out_shape[0] for l in program.layers] == [6, 16, 120, 84, 10]
    stats = rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))
    assert [d.pair for _, d in program.steps] == [1, 0, 0, 0, 0]
    assert [d.merge for _, d in program.steps] == [0, 1, 0, 0, 0]
    assert stats.layer_cycles == (2946, 4019, 819, 199, 40)
    assert round(stats.utilization["network"], 3) == 0.811


def test_autoencoder_runs_bit_exact_on_the_rtl(device):
    """The MLPerf Tiny FC autoencoder on N x 640 vectors, BatchNorm1d folded."""
    torch.manual_seed(0)
    model = _randomize_bn(reference.fc_autoencoder())
    x = np.random.default_rng(0).standard_normal((16, 640)).astype(np.float32)
    program = striate.compile(model, x)
    assert program.graph.input_shape == (640,) and len(program.layers) == 10
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


@pytest.mark.parametrize("forward", [
    lambda s, x: s.relu(s.b(s.relu(s.a(x))) + x),           # an identity shortcut
    lambda s, x: s.a(x) + s.relu(s.b(x)),                     # two branches from one tensor
    lambda s, x: x + x,                                       # one tensor twice: one RAM
    lambda s, x: F.relu6(s.a(x).add(x)) + s.b(x),             # adds in a row, fan-out of x
])
def test_adds_run_bit_exact_in_either_ram_layout(device, forward):
    model = Net(forward).eval()
    x = np.random.default_rng(2).standard_normal((8, 3, 7, 9)).astype(np.float32)
    program = striate.compile(model, x)
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:3]))


def test_illegal_add_descriptors_stop_with_an_error(device):
    """An add whose second input lies outside the activation memory, or is unaligned, stops
    the run with the error code of any descriptor, and the device runs on afterwards."""
    from striate.sw.mapping import memmap
    from striate.sw.runtime.driver import DeviceError
    model = Net(lambda s, x: s.a(x) + x).eval()
    x = np.random.default_rng(2).standard_normal((4, 3, 5, 5)).astype(np.float32)
    program = striate.compile(model, x)
    xq = program.quantize_input(x[:1])
    good = program.descriptors
    cfg = program.config
    for change, code in ((dict(in2_addr=cfg.act_bytes - cfg.pe_in), memmap.E_ACT),
                         (dict(in2_addr=good[-1].in2_addr + 1), memmap.E_ALIGN)):
        bad = type(good[-1])(**{**good[-1].__dict__, **change})
        program.descriptors = good[:-1] + (bad,)
        try:
            with pytest.raises(DeviceError, match=f"error {code} "):
                device.run(program, xq)
        finally:
            program.descriptors = good
            device._loaded = None
    rtl_cases.check_on_rtl(device, program, xq)


def test_a_configuration_without_the_add_path_refuses_adds():
    model = Net(lambda s, x: s.a(x) + x).eval()
    with pytest.raises(striate.MappingError, match=r"layer 'add' \(module add\): a residual add "
                                                   r"needs AcceleratorConfig.residual_add"):
        striate.compile(model, np.random.rand(4, 3, 5, 5),
                        striate.AcceleratorConfig(residual_add=False))
