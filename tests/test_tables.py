"""Element-wise functions by table (tanh, sigmoid, hard-swish, SiLU, GELU, ...): each table is
the float function of every int8 input rounded once to the output scale, the golden model and
the RTL look values up the same way, fusions keep results bit for bit."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate.sw import compiler
from striate.sw.golden import model as golden
from striate.sw.ir import passes
from striate.sw.ir.quantize import quantize_graph
from striate.sw.mapping import memmap

import rtl_cases
from test_fileformat import pack, split


def _lenet_tanh():
    """LeNet as it was first written: tanh units, a logistic unit before the classifier."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 2 * 2, 32), nn.Sigmoid(), nn.Linear(32, 10)).eval()


X = np.random.default_rng(0).standard_normal((32, 1, 16, 16)).astype(np.float32)


def test_lenet_with_tanh_and_sigmoid_runs_bit_exact(device, tmp_path):
    model = _lenet_tanh()
    program = striate.compile(model, X)
    kinds = [(l.name, l.pool, l.table is not None) for l in program.layers]
    # tanh then average pooling: the pool stays a layer of its own (the table comes last);
    # tanh then max pooling fuses (tanh never decreases)
    assert kinds == [("0", "none", True), ("2", "avg", False), ("3", "max", True),
                     ("7", "none", True), ("9", "none", False)]
    with torch.no_grad():
        ref = model(torch.from_numpy(X)).numpy()
    y = program.run_reference(program.quantize_input(X)) * program.output_scale
    assert np.abs(y - ref).max() <= 0.05 * np.abs(ref).max()
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.9
    rtl_cases.check_on_rtl(device, program, program.quantize_input(X[:2]))
    program.save(tmp_path / "lenet.stp")
    loaded = striate.load_program(tmp_path / "lenet.stp")
    for a, b in zip(loaded.layers, program.layers):
        assert (a.table is None) == (b.table is None)
        if a.table is not None:
            np.testing.assert_array_equal(a.table, b.table)


FORMS = [   # (module, the same function as a call on a tensor, the function in float64)
    (nn.Tanh(), torch.tanh, np.tanh),
    (nn.Sigmoid(), lambda x: x.sigmoid(), lambda v: 1 / (1 + np.exp(-v))),
    (nn.Hardtanh(-0.5, 1.5), lambda x: F.hardtanh(x, -0.5, 1.5), lambda v: np.clip(v, -0.5, 1.5)),
    (nn.Hardsigmoid(), F.hardsigmoid, lambda v: np.clip(v / 6 + 0.5, 0, 1)),
    (nn.Hardswish(), F.hardswish, lambda v: v * np.clip(v + 3, 0, 6) / 6),
    (nn.SiLU(), F.silu, lambda v: v / (1 + np.exp(-v))),
    (nn.LeakyReLU(0.2), lambda x: F.leaky_relu(x, negative_slope=0.2),
     lambda v: np.where(v > 0, v, 0.2 * v)),
    (nn.GELU(), F.gelu, lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / np.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: F.gelu(x, approximate="tanh"),
     lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))),
    (nn.ELU(0.5), lambda x: F.elu(x, 0.5), lambda v: np.where(v > 0, v, 0.5 * np.expm1(v))),
]


class _Call(nn.Module):
    def __init__(self, conv, fn):
        super().__init__()
        self.conv, self.fn = conv, fn

    def forward(self, x):
        return self.fn(self.conv(x))


@pytest.mark.parametrize("index", range(len(FORMS)))
def test_every_function_is_its_float_function_rounded_once(index):
    """Module and functional forms give the same table: the function of each int8 input at the
    conv's scale, rounded to the output scale (half up) and saturated."""
    module, call, reference = FORMS[index]
    torch.manual_seed(index)
    conv = nn.Conv2d(3, 4, 3, bias=False)
    x = 3 * np.random.default_rng(index).standard_normal((16, 3, 6, 6)).astype(np.float32)
    programs = [striate.compile(nn.Sequential(conv, module).eval(), x),
                striate.compile(_Call(conv, call).eval(), x)]
    a, b = (p.layers[0] for p in programs)
    np.testing.assert_array_equal(a.table, b.table)
    # the table's input scale, from the conv's requantization: input scale times each
    # channel's weight scale over its multiplier
    w_scale = np.abs(conv.weight.detach().numpy()).reshape(4, -1).max(axis=1) / 127
    s_in = programs[0].input_scale * w_scale / (a.mult / 2.0 ** a.shift)
    assert np.allclose(s_in, s_in[0], rtol=1e-6)
    s_in, s_out = float(s_in[0]), a.out_scale
    v = np.arange(-128, 128) * s_in
    want = np.clip(np.floor(reference(v) / s_out + 0.5), -128, 127)
    np.testing.assert_array_equal(a.table, want)
    inside = np.abs(reference(v) / s_out) <= 127
    assert np.abs(a.table * s_out - reference(v))[inside].max() <= s_out / 2 + 1e-12



def test_fusions_around_a_table_are_exact():
    """A clamp after a table folds into the table; a max pool after a table that decreases
    somewhere (SiLU) stays a layer of its own; the golden model agrees before and after every
    pass."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Tanh(), nn.ReLU6(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Hardswish(), nn.Linear(8 * 4 * 4, 4)).eval()
    with torch.no_grad():           # inputs reaching SiLU's falling part, below -1.28
        model[4].weight.mul_(20)
    x = np.random.default_rng(3).standard_normal((16, 2, 8, 8)).astype(np.float32)
    program = striate.compile(model, x)
    from striate.sw.ir import tables
    assert not tables.monotonic(program.layers[1].table)
    assert [(l.name, l.lo, l.pool, l.table is not None) for l in program.layers] == [
        ("0", 0, "none", True), ("4", -128, "none", True), ("6", -128, "max", False),
        ("8", -128, "none", True), ("9", -128, "none", False)]
    tanh = program.layers[0].table
    assert tanh.min() >= 0          # ReLU6 after it: the table holds no negative value
    nodes, xc = compiler.lower(model, x)
    graph = quantize_graph(nodes, xc, xc.shape[1:])
    xq = program.quantize_input(x)
    reference = golden.run_graph(graph, xq)
    for integer_pass in passes.INTEGER_PASSES:
        graph = integer_pass(graph)
        np.testing.assert_array_equal(golden.run_graph(graph, xq), reference)
    np.testing.assert_array_equal(program.run_reference(xq), reference)


def test_a_table_is_bit_exact_on_the_rtl_around_adds_concatenations_and_pools(device):
    """Sigmoid (0 maps to 64) feeding a concatenation whose first part needs zero channels:
    the producer cannot compute them through its table, so a copy fills the slot; a table
    after an add is a layer of its own (the add unit has no lookup)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.a, self.b = nn.Conv2d(4, 3, 3, padding=1), nn.Conv2d(4, 4, 1)
            self.c = nn.Conv2d(7, 7, 1)

        def forward(self, x):
            y = torch.cat([torch.sigmoid(self.a(x)), F.gelu(self.b(x))], 1)
            return F.elu(self.c(y) + y)
    x = np.random.default_rng(4).standard_normal((8, 4, 6, 6)).astype(np.float32)
    program = striate.compile(Net().eval(), x)
    names = [l.name for l in program.layers]
    assert "cat.slot0" in names
    add = names.index("add")
    assert program.layers[add + 1].table is not None and program.layers[add].table is None
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_signals_and_vectors_take_tables(device):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.Tanh(), nn.MaxPool1d(2),
                          nn.Flatten(), nn.Linear(8 * 10, 16), nn.Sigmoid(),
                          nn.Linear(16, 3)).eval()
    x = np.random.default_rng(5).standard_normal((8, 4, 20)).astype(np.float32)
    program = striate.compile(model, x)
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_identical_tables_share_a_slot_and_too_many_are_refused():
    torch.manual_seed(6)
    layers = []
    for _ in range(5):
        layers += [nn.Conv2d(4, 4, 1), nn.Tanh()]
    model = nn.Sequential(*layers).eval()
    x = np.random.default_rng(6).standard_normal((8, 4, 4, 4)).astype(np.float32)
    program = striate.compile(model, x)
    slots = [d.table for d in program.descriptors]
    assert len(program.plan.tables) == len(set(slots)) and min(slots) == 1
    assert max(slots) == len(program.plan.tables) <= 5
    few = striate.AcceleratorConfig(activation_tables=max(1, len(program.plan.tables) - 1))
    with pytest.raises(striate.MappingError,
                       match=rf"program needs {len(program.plan.tables)} distinct activation "
                             rf"tables, must fit the table memory of {few.activation_tables} "
                             r"\(AcceleratorConfig.activation_tables\)"):
        striate.compile(model, x, few)
    with pytest.raises(striate.MappingError,
                       match=r"layer '0' \(module 0, 1\): a function by table needs "
                             r"AcceleratorConfig.activation_tables"):
        striate.compile(model, x, striate.AcceleratorConfig(activation_tables=0))


@pytest.mark.parametrize("model, message", [
    (_Call(nn.Identity(), lambda x: F.hardtanh(x, 1.0, 0.5)),
     "Hardtanh at 'hardtanh' is not supported: min_val must be below max_val, not 1.0 and 0.5"),
    (nn.Sequential(nn.LeakyReLU(float("nan"))), "leaky_relu at '0' is not supported: "
                                                "negative_slope must be finite, not nan"),
    (nn.Sequential(nn.Softsign()), "Softsign at '0' is not supported"),
])
def test_what_tables_cannot_take_is_named(model, message):
    with pytest.raises(striate.UnsupportedLayerError, match=message):
        striate.compile(model.eval(), np.random.rand(4, 2, 4, 4).astype(np.float32))


def test_a_file_whose_table_does_not_match_its_descriptor_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 1)).eval()
    program = striate.compile(model, np.random.rand(4, 2, 6, 6).astype(np.float32))
    path = tmp_path / "t.stp"
    program.save(path)
    header, blob = split(path.read_bytes())
    assert "table" in header["layers"][0]["arrays"] and "table" not in \
        header["layers"][1]["arrays"]
    header["layers"][0]["arrays"].pop("table")
    path.write_bytes(pack(json.dumps(header).encode(), blob))
    with pytest.raises(striate.ProgramFormatError, match="table"):
        striate.load_program(path)


def test_the_table_memory_is_a_host_window(device):
    """What the host writes into the table region reads back from it."""
    assert memmap.memories(device.config)[memmap.TABLES].depth == 16 * memmap.TABLE_WORDS
    words = np.random.default_rng(7).integers(0, 1 << 32, 2 * memmap.TABLE_WORDS,
                                              dtype=np.uint64).astype(np.uint32)
    base = memmap.address(memmap.TABLES, memmap.TABLE_WORDS)
    device.transport.write(base, words)
    np.testing.assert_array_equal(device.transport.read(base, len(words)), words)


def test_a_saturating_function_narrows_the_scale_of_what_it_reads():
    """tanh of inputs up to 20: the table's input scale stops where tanh stops changing at its
    output's resolution (about 3.1), so the table uses its entries (141 levels, not 40); SiLU, which
    keeps changing, keeps the input's full range."""
    torch.manual_seed(8)
    conv = nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight.mul_(30)
    x = np.random.default_rng(8).standard_normal((16, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        top = float(conv(torch.from_numpy(x)).abs().max())
    assert top > 10
    tanh = striate.compile(nn.Sequential(conv, nn.Tanh()).eval(), x).layers[0].table
    silu = striate.compile(nn.Sequential(conv, nn.SiLU()).eval(), x).layers[0].table
    assert len(np.unique(tanh)) > 100 and tanh[0] == -127 and tanh[-1] == 127   # 40 unnarrowed
    assert int(np.argmax(silu == silu.min())) > 100      # its dip stays inside the range
