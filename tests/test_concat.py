"""Concatenations on the hardware: inputs written in place into channel-group slices of one
tensor (no descriptor, no cycles), zero channels where an input does not fill whole words,
copies where a tensor cannot be written in place; every layer bit-exact on the RTL."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate.models import reference
from striate.sw import compiler, fuzz
from striate.sw.golden import model as golden
from striate.sw.ir import numerics
from striate.sw.ir.passes import INTEGER_PASSES
from striate.sw.ir.quantize import quantize_graph
from striate.sw.mapping.concat import place_concats
from striate.sw.runtime.program import Program

import rtl_cases


class Net(nn.Module):
    """Convolutions ``a`` (3 -> 3, 3x3), ``b`` (3 -> 5, 1x1), ``c`` (3 -> 8, 3x3) and a
    forward given as a function."""

    def __init__(self, forward):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 5, 1)
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


def _cat(*parts):
    return torch.cat(list(parts), 1)


FORWARDS = {
    # a 3-channel input first: its producer computes zero channels up to a whole word
    "padded producer": lambda s, x: _cat(s.a(x), s.c(x)),
    # the network input cannot be written in place: copied into its slot
    "input part": lambda s, x: _cat(x, s.c(x), s.b(x)),
    # one tensor twice, and one that another layer reads too: copies
    "tensor twice": lambda s, x: (lambda y: _cat(y, y))(s.b(x)),
    "fan-out part": lambda s, x: (lambda y: _cat(y, F.relu(y)))(s.b(x)),
    # zero channels inside: convolutions reading it skip them, an add and the output read a
    # copy without them
    "holes to conv": lambda s, x: F.max_pool2d(_cat(s.b(x), s.a(x), s.c(x)), 2),
    "holes to add": lambda s, x: _cat(s.b(x), s.a(x)) + _cat(s.a(x), s.b(x)),
    "holes out": lambda s, x: _cat(s.b(x), s.a(x)),
    # a concatenation inside another, with and without whole words
    "nested": lambda s, x: _cat(_cat(s.c(x), s.c(x)), s.b(x)),
    "nested holes": lambda s, x: _cat(_cat(s.b(x), s.a(x)), s.c(x), x),
}

CONFIGS = {"default": striate.AcceleratorConfig(), "small": fuzz.CONFIGS["small"]}


@pytest.fixture(scope="module")
def devices():
    opened = {name: striate.open("verilator", config) for name, config in CONFIGS.items()}
    yield opened
    for device in opened.values():
        device.close()


def _views_in_place(program):
    """Each concatenation input lies in its output at its channel offset."""
    cfg, tensors = program.config, program.plan.tensors
    for cat in (l for l in program.layers if l.op == "concat"):
        offset = 0
        for name in cat.inputs:
            part = program.graph.layer(name)
            assert tensors[name][0] == tensors[cat.name][0] + offset * cat.out_shape[1] * \
                cat.out_shape[2], (cat.name, name)
            offset += part.out_shape[0]
            assert name == cat.inputs[-1] or part.out_shape[0] % cfg.pe_in == 0


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("case", list(FORWARDS))
def test_concatenations_run_bit_exact(case, config, devices):
    model = Net(FORWARDS[case]).eval()
    x = np.random.default_rng(5).standard_normal((8, 3, 6, 7)).astype(np.float32)
    program = striate.compile(model, x, CONFIGS[config])
    _views_in_place(program)
    xq = program.quantize_input(x[:3])
    with torch.no_grad():           # the placed graph still follows the model
        ref = model(torch.from_numpy(x[:3])).numpy()
    y = program.run_reference(xq) * program.output_scale
    assert np.abs(y - ref).max() <= 0.05 * np.abs(ref).max() + 4 * program.output_scale
    rtl_cases.check_on_rtl(devices[config], program, xq)


def test_placement_keeps_the_golden_model_and_adds_only_what_it_must():
    """Which copies and zero channels each case gets on 4 input lanes, and the placed graph's
    output equals the unplaced one's bit for bit."""
    want = {
        "padded producer": (["cat.dense"], {"a": 4}),
        "input part": (["cat.slot0", "cat.dense"], {}),
        "tensor twice": (["cat.slot0", "cat.dense"], {}),
        "fan-out part": (["cat.slot0", "cat.dense"], {}),
        "holes to conv": ([], {"b": 8, "a": 4}),
        "holes to add": (["cat.dense", "cat_1.dense"], {"b": 8, "a#2": 4}),
        "holes out": (["cat.dense"], {"b": 8}),
        "nested": ([], {}),
        "nested holes": (["cat_1.slot0", "cat_1.slot2", "cat_1.dense"], {"b": 8}),
    }
    x = np.random.default_rng(5).standard_normal((8, 3, 6, 7)).astype(np.float32)
    for case, forward in FORWARDS.items():
        nodes, xc = compiler.lower(Net(forward).eval(), x)
        graph = quantize_graph(nodes, xc, xc.shape[1:])
        for integer_pass in INTEGER_PASSES:
            graph = integer_pass(graph)
        placed = place_concats(graph, striate.AcceleratorConfig())
        again = place_concats(placed, striate.AcceleratorConfig())     # nothing left to do
        assert [(l.name, l.in_shape, l.out_shape) for l in again.layers] == \
            [(l.name, l.in_shape, l.out_shape) for l in placed.layers]
        xq = numerics.quantize(xc, graph.input_scale)
        np.testing.assert_array_equal(golden.run_graph(placed, xq), golden.run_graph(graph, xq),
                                      err_msg=case)
        before = {l.name: l for l in graph.layers}
        copies = [l.name for l in placed.layers if l.name not in before]
        padded = {l.name: l.out_shape[0] for l in placed.layers
                  if l.name in before and l.out_shape != before[l.name].out_shape
                  and l.op == "conv"}
        assert (copies, padded) == want[case], case
        assert all(placed.layer(name).is_copy for name in copies)


def test_fire_stack_concatenates_in_place_on_the_rtl(devices):
    """SqueezeNet fire modules: both expands write straight into the concatenation (no copy,
    no zero channels), which takes no cycles; every layer bit-exact, cycle model exact."""
    torch.manual_seed(0)
    model = reference.fire_stack()
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    program = striate.compile(model, x)
    cats = [l for l in program.layers if l.op == "concat"]
    assert len(cats) == 4 and program.descriptors[program.layers.index(cats[0])] is None
    assert len(program.layers) == len(compiler.compile_graph(model, x).layers) == 19
    assert sum(d is not None for d in program.descriptors) == 15
    _views_in_place(program)
    stats = rtl_cases.check_on_rtl(devices["default"], program, program.quantize_input(x[:2]))
    assert stats.utilization["network"] >= 0.75 and "cat" not in stats.utilization


def test_concatenations_the_mapper_cannot_place_are_refused():
    """A graph whose concatenation reads the network input, or an input that does not fill
    whole words before another one (what `place_concats` rewrites), is refused by name."""
    x = np.random.default_rng(5).standard_normal((8, 3, 6, 7)).astype(np.float32)
    for forward, match in (
            (FORWARDS["input part"], r"layer 'cat' \(module cat\): the network input must be "
                                     r"copied into the concatenation"),
            (FORWARDS["padded producer"], r"layer 'cat' \(module cat\): input 'a' \(3x6x7\) "
                                          r"must be 6x7 and, unless it is the last input, have "
                                          r"a multiple of 4 channels")):
        nodes, xc = compiler.lower(Net(forward).eval(), x)
        graph = quantize_graph(nodes, xc, xc.shape[1:])
        for integer_pass in INTEGER_PASSES:
            graph = integer_pass(graph)
        with pytest.raises(striate.MappingError, match=match):
            Program(graph, striate.AcceleratorConfig())


def test_concatenations_under_cocotb_with_stalls():
    """The cocotb testbench (Verilator) with random bus and pipeline stalls: zero channels read
    by a pooling layer, a nested concatenation and an add after one, every layer bit-exact."""
    from striate.sim.cocotb_run import run_program

    def forward(s, x):
        y = _cat(_cat(s.b(x), s.a(x)), s.c(x))
        return F.max_pool2d(y, 2) + F.max_pool2d(_cat(s.c(x), s.a(x), s.b(x)), 2)
    model = Net(forward).eval()
    x = np.random.default_rng(6).standard_normal((8, 3, 6, 7)).astype(np.float32)
    program = striate.compile(model, x)
    assert sum(l.op == "concat" for l in program.layers) == 3
    xq = program.quantize_input(x[:2])
    want = program.run_reference(xq, return_all=True)
    for n, res in enumerate(run_program(program, xq, stall_prob=0.3, seed=3)):
        assert all(out is not None for out in res["outputs"])
        for layer, got, ref in zip(program.layers, res["outputs"], want):
            np.testing.assert_array_equal(got, ref[n].reshape(got.shape), err_msg=layer.name)
        assert [c == 0 for c in res["layer_cycles"]] == [l.op == "concat" for l in program.layers]
