"""Streamed programs (`striate.sw.mapping.stream`): tensors and weights in external memory,
layers in tiles through double-buffered on-chip buffers. Every layer bit-exact on the RTL, the
counters equal to the cycle model, the same outputs as the program on chip."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate.sw.config import AcceleratorConfig, MemoryTiming
from striate.sw.cli import main
from striate.sw.errors import MappingError
from striate.sw.golden import roofline, timeline
from striate.sw.mapping import memmap
from striate.sw.mapping.memmap import PROGRAM
from striate.sim.cocotb_transport import CocotbTransport
from striate.sw.runtime.driver import Device, Transport
from striate.sw.runtime.program import Program

import rtl_cases

# Small on-chip memories, so that layers of a few channels on 16 x 16 maps need tiles.
CONFIG = AcceleratorConfig(pe_out=16, pe_in=4, act_bytes=2048, act_banks=4, weight_bytes=32768,
                           param_entries=128, program_depth=16, ext_bytes=1 << 18,
                           max_width=32, max_height=32, activation_tables=4,
                           psum_entries=128)
TIMING = MemoryTiming(20, 8)


@pytest.fixture(scope="module")
def device():
    dev = striate.open("verilator", CONFIG, timing=TIMING)
    yield dev
    dev.close()


def run_both(device, graph, x):
    """The program streamed and, where it fits, on chip: every layer bit-exact, counters as
    the model says, the two alike. Returns the streamed program."""
    streamed = Program(graph, CONFIG, timing=TIMING, streaming="always")
    rtl_cases.check_on_rtl(device, streamed, x)
    try:
        on_chip = Program(graph, CONFIG, timing=TIMING, streaming="never")
    except MappingError:
        return streamed
    np.testing.assert_array_equal(device.run(on_chip, x, return_all=False),
                                  device.run(streamed, x, return_all=False))
    return streamed


@pytest.mark.parametrize("seed", range(16))
def test_random_chains_stream_bit_exact_in_the_predicted_cycles(device, seed):
    graph, rng = rtl_cases.random_chain(seed, layers=3, max_channels=12, max_width=16)
    x = rtl_cases.random_inputs(rng, 2, graph.input_shape)
    # (seed 7 pools a conv map globally, a 13 x 7 window: its whole 12 x 11 x 12 input exceeds
    # half the 2 KiB, so it runs in three chunks of input channels)
    program = run_both(device, graph, x)
    assert len(program.steps) >= 3 * 3


class Blocks(nn.Module):
    """The layer kinds a streamed program tiles: a strided conv with max pooling, a residual
    add, a depthwise-separable pair, a grouped conv, an upsampling copy, a concatenation and a
    linear layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.grouped = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.down = nn.Conv2d(12, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.fc = nn.Linear(20 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.b(F.relu(self.a(x))) + x)
        y = F.relu(self.pw(self.dw(x)))
        y = F.relu(self.grouped(y))
        d = F.relu(self.down(y))
        u = self.up(d)
        cat = torch.cat([u, y], 1)
        return self.fc(F.max_pool2d(cat, 4).flatten(1))


# The 4x4 pool over 20 channels needs 4 KiB. One bank: a transfer may not touch the
# activation memory while a layer runs, so every load waits for the layer before it.
WIDER = dataclasses.replace(CONFIG, act_bytes=4096, act_banks=1)


@pytest.fixture(scope="module")
def wider():
    dev = striate.open("verilator", WIDER, timing=TIMING)
    yield dev
    dev.close()


def test_every_layer_kind_streams_bit_exact(wider, tmp_path, capsys):
    torch.manual_seed(0)
    model = Blocks().eval()
    x = torch.randn(24, 3, 16, 16).numpy()
    program = striate.compile(model, x, WIDER, timing=TIMING, streaming="always")
    ops = {layer.op for layer in program.layers}
    assert {"conv", "add", "concat"} <= ops
    assert any(program.stream.depthwise)
    assert max(sum(1 for owner, (layer, _) in zip(program.stream.owners, program.steps)
                   if owner == i and layer is not None) for i in range(len(program.layers))) > 1
    loads = [d for layer, d in program.steps if layer is None and not d.store
             and d.target != PROGRAM]
    assert loads and all(d.wait for d in loads)       # one bank: nothing overlaps a layer
    path = tmp_path / "s.stp"
    loaded = rtl_cases.check_end_to_end(wider, program, model, x[:2], path, tolerance=0.2)
    assert loaded.stream is not None and loaded.descriptors == ()
    assert loaded.stream.descriptors == program.stream.descriptors

    # The report of a streamed program: external traffic per layer and its roofline.
    assert main(["report", str(path), "-o", str(tmp_path / "r"), "--random", "1"]) == 0
    assert "bit-exact:             1/1 images, every layer" in capsys.readouterr().out
    png = (tmp_path / "r" / "roofline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (tmp_path / "r" / "report.md").read_text()
    assert "ext bytes read/written" in md and "| bound |" in md
    for layer, (read, written) in zip(program.layers, roofline.traffic(program)):
        if layer.op != "concat":
            assert read > 0 and written > 0
            assert f"| {read}/{written} |" in md, layer.name


# Layers run in chunks of input channels, their sums kept in the partial-sum memory: a linear
# layer and a 3x3 convolution whose weights for 16 output channels exceed half the 32 KiB
# weight memory (2 chunks), and convolutions whose one-pixel tiles (a 2 x 2 and a 3 x 3 pooling
# window) exceed half the 2 KiB activation memory (4 chunks), with max, average and no
# pooling, odd sizes.
CHUNKED = {
    "linear": (nn.Sequential(nn.Flatten(), nn.Linear(1100, 20), nn.ReLU(), nn.Linear(20, 10)),
               (1100,), 2),
    "weights-avg": (nn.Sequential(nn.Conv2d(130, 20, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)),
                    (130, 4, 5), 2),
    "maps-max": (nn.Sequential(nn.Conv2d(130, 20, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(20, 8, 1)), (130, 6, 7), 4),
    "maps-pool3": (nn.Sequential(nn.Conv2d(100, 24, 3, padding=1), nn.ReLU(),
                                 nn.MaxPool2d(3, stride=2)), (100, 7, 9), 4),
}


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_layers_beyond_the_buffers_run_in_chunks_of_input_channels(device, name):
    """Each chunk but the last keeps its sums (``psum_out``), each but the first adds to them
    (``psum_in``); every layer bit-exact, the counters of every tile as the model says."""
    model, shape, chunks = CHUNKED[name]
    torch.manual_seed(3)
    x = torch.randn(4, *shape).numpy()
    program = striate.compile(model.eval(), x, CONFIG, timing=TIMING)
    tiles = [d for owner, (layer, d) in zip(program.stream.owners, program.steps)
             if owner == 0 and layer is not None]
    flags = [(d.psum_in, d.psum_out) for d in tiles]
    one = [(0, 1)] + [(1, 1)] * (chunks - 2) + [(1, 0)]
    assert flags == one * (len(tiles) // chunks), flags
    assert sum(d.in_c for d in tiles[:chunks]) == shape[0]
    # every tile stamped: each one's end is the cycle the model says
    stamped = tuple((layer, dataclasses.replace(d, stamp=1)) for layer, d in program.steps)
    assert len(stamped) <= 256
    program.stream = dataclasses.replace(program.stream, steps=stamped,
                                         stamped=(True,) * len(stamped))
    xq = program.quantize_input(x[:2])
    got = device.run(program, xq, return_all=True)
    for layer, a, b in zip(program.layers, got, program.run_reference(xq, return_all=True)):
        np.testing.assert_array_equal(a, b.reshape(a.shape), err_msg=layer.name)
    stamps = device.transport.read(memmap.address(memmap.REG, memmap.LAYER_CYCLES),
                                   len(stamped))
    assert [int(v) for v in stamps] == list(timeline.run(stamped, CONFIG, TIMING).stamps)


def test_chunks_need_the_partial_sum_memory():
    model, shape, _ = CHUNKED["linear"]
    x = torch.randn(4, *shape).numpy()
    with pytest.raises(MappingError, match=r"layer .*: the weights of 16 output channels "
                                           r"need 17600 bytes, must fit half the weight memory "
                                           r".*which need AcceleratorConfig.psum_entries"):
        striate.compile(model.eval(), x, dataclasses.replace(CONFIG, psum_entries=0),
                        timing=TIMING)


def test_streaming_needs_external_memory():
    graph, _ = rtl_cases.random_chain(0, layers=1)
    with pytest.raises(MappingError, match="needs AcceleratorConfig.ext_bytes"):
        Program(graph, AcceleratorConfig(ext_bytes=0), streaming="always")
    with pytest.raises(striate.StriateError, match="streaming must be one of"):
        Program(graph, CONFIG, streaming="sometimes")


# Shapes at the default configuration's limits, streamed because they do not fit on chip:
# a map 256 wide (and one 256 high) with channels that leave a lane and a row group short,
# and weights beyond half the weight memory in tiles of 7, 7 and 1 row groups (of 16, 16 and 8
# channels).
AT_LIMITS = {
    "wide": (nn.Sequential(nn.Conv2d(5, 20, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(20, 40, 5, stride=2, padding=2), nn.ReLU()), (5, 24, 256)),
    "tall": (nn.Sequential(nn.Conv2d(3, 10, 7, padding=3), nn.ReLU(), nn.AvgPool2d(2),
                           nn.Conv2d(10, 18, 3, padding=1)), (3, 256, 8)),
    "largest": (nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                              nn.MaxPool2d(3, stride=2, padding=1)), (3, 256, 256)),
    "weights": (nn.Sequential(nn.Conv2d(256, 232, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(232, 24, 1)), (256, 5, 6)),
    # three rows of 64 channels at 256 columns (48 KiB) exceed half the activation memory:
    # tiles of rows and columns, as in VGG-16's first block at 224 x 224
    "columns": (nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
                (3, 6, 256)),
    "columns-depthwise": (nn.Sequential(nn.Conv2d(3, 128, 1), nn.ReLU(),
                                        nn.Conv2d(128, 128, 3, padding=1, groups=128),
                                        nn.ReLU(), nn.Conv2d(128, 16, 1)), (3, 5, 250)),
}


@pytest.fixture(scope="module")
def default_device():
    dev = striate.open("verilator", AcceleratorConfig(), timing=MemoryTiming(100, 8))
    yield dev
    dev.close()


@pytest.mark.parametrize("name", sorted(AT_LIMITS))
def test_shapes_at_the_default_limits_stream_bit_exact(default_device, name):
    model, shape = AT_LIMITS[name]
    torch.manual_seed(1)
    for p in model.parameters():
        nn.init.uniform_(p, -0.2, 0.2)
    x = torch.randn(3, *shape).numpy()
    program = striate.compile(model.eval(), x, AcceleratorConfig(),
                              timing=MemoryTiming(100, 8))
    assert program.stream is not None           # "auto": it does not fit on chip
    tiles = [sum(1 for owner, (layer, _) in zip(program.stream.owners, program.steps)
                 if owner == i and layer is not None) for i in range(len(program.layers))]
    assert max(tiles) > 1, tiles
    if name == "weights":
        sizes = [d.out_c for owner, (layer, d) in zip(program.stream.owners, program.steps)
                 if owner == 0 and layer is not None]
        assert sorted(set(sizes)) == [8, 7 * 16], sizes
    narrower = [layer.name for layer, _ in program.steps
                if layer is not None and layer.in_shape[2] < program.layers[
                    [l.name for l in program.layers].index(layer.name)].in_shape[2]]
    assert bool(narrower) == name.startswith("columns"), narrower
    rtl_cases.check_on_rtl(default_device, program, program.quantize_input(x[:1]))


@pytest.mark.parametrize("simulator,bandwidth", [("verilator", 8), ("icarus", 8),
                                                ("verilator", 2), ("verilator", 3)])
def test_streamed_programs_under_cocotb_on_cocotbext_axi(simulator, bandwidth):
    """The cocotb backend serves the AXI4 port from cocotbext-axi's ``AxiRam``: every layer
    bit-exact. The RAM answers a burst 2 cycles after its address, so at full bandwidth the
    counters equal the cycle model's for a latency of 2; throttled to 2 or 3 bytes a cycle
    (each direction on its own), within 1 % of it."""
    timing = MemoryTiming(20, bandwidth)
    if simulator == "verilator":
        device = striate.open("cocotb", CONFIG, timing=timing)
    else:
        device = Device(CocotbTransport(CONFIG, simulator, timing), CONFIG, "cocotb on Icarus")
    try:
        for seed in (0, 1) if bandwidth == 8 else (2,):
            graph, rng = rtl_cases.random_chain(seed, layers=3, max_channels=12, max_width=16)
            program = Program(graph, CONFIG, timing=timing, streaming="always")
            x = rtl_cases.random_inputs(rng, 1, graph.input_shape)
            got = device.run(program, x, return_all=True)
            for layer, a, b in zip(program.layers, got, program.run_reference(x, return_all=True)):
                np.testing.assert_array_equal(a, b.reshape(a.shape), err_msg=layer.name)
            ram = MemoryTiming(2, bandwidth)
            model = timeline.program_counters(program, timing=ram)
            cycles = device.last_run.cycles
            if bandwidth == 8:
                assert cycles == model.cycles
                assert list(device.last_run.layer_cycles) == \
                    timeline.per_layer(program, timing=ram)
            else:
                assert abs(cycles - model.cycles) <= 0.01 * model.cycles, (cycles, model.cycles)
        # the backdoor into the RAM, and its limits
        device.transport.write_ext(CONFIG.ext_bytes - 3, b"\x01\x02\x03")
        assert device.transport.read_ext(CONFIG.ext_bytes - 3, 3).tolist() == [1, 2, 3]
        with pytest.raises(striate.StriateError, match="lie outside"):
            device.transport.read_ext(CONFIG.ext_bytes - 3, 4)
    finally:
        device.close()


class BusOnly(Transport):
    """A simulator reached over its host bus alone, as a board is over its serial line."""

    def __init__(self, inner):
        self.inner = inner

    def write(self, addr, words):
        self.inner.write(addr, words)

    def read(self, addr, count=1):
        return self.inner.read(addr, count)

    def wait(self, cycles):
        self.inner.wait(cycles)


def test_without_a_backdoor_external_memory_is_staged_through_the_accelerator(device):
    graph, rng = rtl_cases.random_chain(5, layers=3, max_channels=12, max_width=16)
    program = Program(graph, CONFIG, timing=TIMING, streaming="always")
    x = rtl_cases.random_inputs(rng, 2, graph.input_shape)
    staged = Device(BusOnly(device.transport), CONFIG, "bus only")
    got = staged.run(program, x, return_all=True)
    for layer, a, b in zip(program.layers, got, program.run_reference(x, return_all=True)):
        np.testing.assert_array_equal(a, b.reshape(a.shape), err_msg=layer.name)
    assert not timeline.mismatch(program, staged.last_run.layer_cycles, staged.last_run.cycles)

    # Ranges inside words keep the bytes around them; reads see what the backdoor sees.
    backdoor = device.transport
    end = CONFIG.ext_bytes
    backdoor.write_ext(end - 12, bytes(range(100, 112)))
    staged.write_ext(end - 9, b"\x01\x02\x03\x04\x05")
    expected = bytes([100, 101, 102, 1, 2, 3, 4, 5, 108, 109, 110, 111])
    assert backdoor.read_ext(end - 12, 12).tobytes() == expected
    assert staged.read_ext(end - 11, 10).tobytes() == expected[1:11]
    data = np.random.default_rng(0).integers(0, 256, CONFIG.act_bytes + 10, np.uint8)
    staged.write_ext(1002, data)        # more than the activation memory holds at once
    assert np.array_equal(backdoor.read_ext(1002, len(data)), data)
    assert np.array_equal(staged.read_ext(1002, len(data)), data)
    with pytest.raises(striate.StriateError, match="lie outside"):
        staged.write_ext(end - 2, b"abc")


def test_transfers_overlap_exactly_when_they_share_an_external_byte():
    """`stream._overlap` (which decides when a load waits for the stores before it) against
    the bytes each transfer touches, on strided transfers of many chunks like a narrow tile's."""
    from striate.sw.mapping.descriptor import MoveDescriptor
    from striate.sw.mapping.stream import _overlap
    rng = np.random.default_rng(5)

    def move():
        count = int(rng.integers(1, 40))
        length = 4 * int(rng.integers(1, 12))
        stride = length + 4 * int(rng.integers(0, 30)) if count > 1 else 0
        return MoveDescriptor(op=0, target=4, ext_addr=4 * int(rng.integers(0, 600)),
                              local_addr=0, length=length, count=count, ext_stride=stride,
                              local_stride=length)

    def touched(m):
        return {m.ext_addr + i * m.ext_stride + b for i in range(m.count)
                for b in range(m.length)}
    outcomes = set()
    for _ in range(3000):
        a, b = move(), move()
        want = bool(touched(a) & touched(b))
        assert _overlap(a, b) == want == _overlap(b, a), (a, b)
        outcomes.add(want)
    assert outcomes == {True, False}


def test_weights_load_while_the_previous_tile_computes_not_after_its_stores(monkeypatch):
    """Where a tile reads what the tile before it stores (a layer boundary), its weight and
    parameter loads come before those stores in the program, so they run while the tile
    before computes; only its activation loads wait for the stores (`stream._order`, before
    `_prefetch` moves some loads earlier still)."""
    from striate.sw.mapping import stream
    from striate.sw.mapping.stream import ACT, WEIGHTS
    monkeypatch.setattr(stream, "_prefetch", lambda steps, owners, *args: (steps, owners))
    windows = 0
    for seed in range(8):
        graph, _ = rtl_cases.random_chain(seed, layers=3, max_channels=12, max_width=16)
        plan = Program(graph, CONFIG, timing=TIMING, streaming="always").stream
        layer_steps = [i for i, (layer, _) in enumerate(plan.steps) if layer is not None]
        for p, k in zip(layer_steps, layer_steps[1:]):
            moves = [(i, move) for i, (_, move) in enumerate(plan.steps[p + 1:k], p + 1)
                     if plan.owners[i] >= 0]
            # a flush: the stores of the tile before, the first one waiting for it to end
            flush = [i for i, m in moves if m.store and m.wait]
            mine = [(i, m) for i, m in moves if plan.owners[i] == plan.owners[k]
                    and not m.store]
            weights = [i for i, m in mine if m.target != ACT]
            if flush and weights:
                windows += 1
                assert max(weights) < flush[0], (seed, p, k)
                assert all(i > flush[0] for i, m in mine if m.target == ACT), (seed, p, k)
                assert any(plan.steps[i][1].target == WEIGHTS for i in weights)
    assert windows > 0


def test_weight_blocks_follow_one_another_inside_a_half():
    """`stream._Halves`: every block lies inside one half of the memory and never overlaps
    the block before it, whatever the sizes up to a half."""
    from striate.sw.mapping.stream import _Halves
    rng = np.random.default_rng(3)
    for size in (64, 1024, 32768):
        blocks = _Halves(size)
        prev = None
        wrapped = 0
        for _ in range(400):
            units = int(rng.integers(1, size // 2 + 1))
            first = blocks.place(units)
            stop = first + units
            assert first // (size // 2) == (stop - 1) // (size // 2), (size, first, units)
            assert 0 <= first and stop <= size
            if prev is not None:
                assert stop <= prev[0] or prev[1] <= first, (size, prev, first, units)
                wrapped += first < prev[0]
            prev = (first, stop)
        assert wrapped > 0


def _mobile_net():
    def separable(c, o, stride):
        return [nn.Conv2d(c, c, 3, stride, 1, groups=c), nn.ReLU(), nn.Conv2d(c, o, 1),
                nn.ReLU()]
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), *separable(16, 32, 1),
                         *separable(32, 64, 2), *separable(64, 128, 1),
                         *separable(128, 128, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, 10)).eval()


@pytest.mark.parametrize("timing", [TIMING, MemoryTiming(200, 8)])
def test_weights_load_ahead_where_the_transfer_engine_idles(timing, monkeypatch):
    """`stream._prefetch` on a MobileNet-style chain, whose depthwise layers run shorter than
    the next pointwise layer's weights take to load: some weight loads move before the tile
    ahead of their reader's; no tile between a load and its reader reads the bytes it
    overwrites, and the one computing while it runs does not either; the cycle model predicts
    fewer cycles than with every load in its tile's slot; the RTL agrees, every layer
    bit-exact. Its 128-channel depthwise layers need all 128 parameter entries, so they run
    in spans of channels that fit half of them."""
    from striate.sw.mapping import stream
    config = dataclasses.replace(CONFIG, act_bytes=8192)
    net = _mobile_net()
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    program = striate.compile(net, x, config=config, timing=timing, streaming="always")
    plan = program.stream
    tiles = [i for i, (layer, _) in enumerate(plan.steps) if layer is not None]
    ahead = 0
    for i, (layer, move) in enumerate(plan.steps):
        if layer is not None or move.target not in (stream.WEIGHTS, stream.PARAMS):
            continue
        first = move.local_addr
        stop = first + (move.count - 1) * move.local_stride + move.length
        running = [t for t in tiles if t < i][-1:]

        def reads(t):       # the block tile step t reads if it meets the bytes move writes
            layer, desc = plan.steps[t]
            if layer.op != "conv":
                return None
            if move.target == stream.WEIGHTS:
                lo = desc.weight_addr
                hi = lo + stream._weight_rows(layer, config, plan.depthwise[plan.owners[t]])
            else:
                lo = desc.param_addr * stream.ENTRY_BYTES
                hi = lo + stream.groups(layer.out_shape[0], config.pe_out) * config.pe_out \
                    * stream.ENTRY_BYTES
            return (lo, hi) if lo < stop and first < hi else None
        assert not any(reads(t) for t in running), (i, move)
        # the first tile after it that reads those bytes is one of the layer it loads for,
        # and reads all of them
        reader = next(t for t in tiles if t > i and reads(t))
        assert plan.owners[reader] == plan.owners[i], (i, move)
        assert reads(reader)[0] <= first and stop <= reads(reader)[1], (i, move)
        ahead += sum(i < t < reader for t in tiles) > 1
    assert ahead > 0
    spans = {(plan.owners[t], plan.steps[t][1].param_addr) for t in tiles
             if plan.depthwise[plan.owners[t]]
             and plan.steps[t][0].out_shape[0] < program.graph.layers[plan.owners[t]].out_shape[0]}
    assert len(spans) >= 2
    monkeypatch.setattr(stream, "_prefetch", lambda steps, owners, *args: (steps, owners))
    in_slot = striate.compile(net, x, config=config, timing=timing, streaming="always")
    assert timeline.program_counters(program).cycles < \
        timeline.program_counters(in_slot).cycles
    with striate.open("verilator", config, timing=timing) as dev:
        rtl_cases.check_on_rtl(dev, program, program.quantize_input(x[:1]))


class WideSum(nn.Module):
    """Two linear layers of one input, added: 300 channels, 19 groups of 16, more than the
    4-bit register of output groups the 8 parameter rows of `CONFIG` need."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 300), nn.Linear(8, 300)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_an_add_wider_than_the_parameter_memory_indexes_in_the_predicted_cycles(device):
    """An add reads no parameters, so its output groups may exceed what the sequencer's count
    register holds (`derive.count_widths`); the set-up's shift-add terms then take their
    cycles from the bits it keeps, as the cycle model counts them."""
    from striate.sw.mapping import derive
    torch.manual_seed(1)
    x = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    program = striate.compile(WideSum().eval(), x, config=CONFIG, timing=TIMING,
                              streaming="always")
    add = next(layer for layer in program.layers if layer.op == "add")
    assert -(-add.out_shape[0] // CONFIG.pe_out) >= 1 << derive.count_widths(CONFIG)["og_n"]
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_a_depthwise_layer_beyond_half_the_parameters_runs_in_spans_of_channels(device):
    """96 depthwise channels need 96 parameter entries, more than half of `CONFIG`'s 128: the
    layer runs in spans of channels (input and output alike) that fit half, bit-exact in the
    predicted cycles."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 96, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(96, 96, 3, padding=1, groups=96), nn.ReLU(),
                        nn.Conv2d(96, 8, 1)).eval()
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    program = striate.compile(net, x, config=CONFIG, timing=TIMING, streaming="always")
    plan = program.stream
    dw = [i for i, depthwise in enumerate(plan.depthwise) if depthwise]
    assert dw
    spans = {(layer.out_shape[0], desc.param_addr) for (layer, desc), owner
             in zip(plan.steps, plan.owners) if layer is not None and owner in dw}
    assert sorted(channels for channels, _ in spans) == [32, 64]
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))


def test_spans_of_output_channels_are_whole_words_where_pe_out_is_below_pe_in():
    """With 2 output channels a group and 4 a word, a layer whose weights allow 3 groups a
    span runs in spans of 2 (its stores and the next span start on whole words), bit-exact
    in the predicted cycles."""
    config = AcceleratorConfig(pe_out=2, pe_in=4, requant_lanes=1, act_bytes=2048, act_banks=4,
                               weight_bytes=4096, param_entries=64, program_depth=16,
                               ext_bytes=1 << 18, max_width=32, max_height=32,
                               activation_tables=0, psum_entries=64)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 30, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(30, 22, 3, padding=1), nn.ReLU(), nn.Conv2d(22, 6, 1)).eval()
    x = np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32)
    program = striate.compile(net, x, config=config, timing=TIMING, streaming="always")
    # 8 input groups x 9 taps x 8 bytes = 576 bytes a group: 3 fit half the 4 KiB
    widths = {layer.out_shape[0] for (layer, _), owner in zip(program.stream.steps,
                                                                program.stream.owners)
              if layer is not None and owner == 1}
    assert widths == {4, 2}
    with striate.open("verilator", config, timing=TIMING) as dev:
        rtl_cases.check_on_rtl(dev, program, program.quantize_input(x[:2]))


class Shrinking(nn.Module):
    """A 4 x 4 stride-4 stem on a 32 x 32 input (4 KiB, twice `CONFIG`'s activation memory),
    then six 3 x 3 convolutions on its 8 x 8 x 8 output (512 bytes each), the stem's output
    added back, and a linear layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(6))
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = x
        for conv in self.convs:
            y = F.relu(conv(y))
        return self.fc(F.relu(y + x).flatten(1))


def test_maps_that_fit_stay_on_chip_after_the_layers_that_do_not(device, monkeypatch):
    """The stem streams in bands; every layer after it keeps its input and output on chip
    (`stream._resident`): one load of the stem's output, no other activation transfer but
    the network output's store. The maps outnumber the 2 KiB, so some share bytes and are read
    back after reruns of program prefixes. Bit-exact on the RTL, every layer, with the
    counters as predicted and fewer cycles than with every map streamed."""
    from striate.sw.mapping import stream
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    program = striate.compile(Shrinking(), x, config=CONFIG, timing=TIMING, streaming="always")
    plan, layers = program.stream, program.layers
    assert plan.kept[0] is None and plan.kept[-1] is None
    assert all(k is not None for k in plan.kept[1:-1])
    act = [(owner, move) for owner, (layer, move) in zip(plan.owners, plan.steps)
           if layer is None and move.target == stream.ACT]
    stem_output = plan.tensors[layers[0].name]
    assert [m.ext_addr for o, m in act if o > 0 and not m.store] == [stem_output[0]]
    assert [o for o, m in act if o > 0 and m.store] == [len(layers) - 1]
    assert len(Device._readback_runs(program, True)) > 1
    rtl_cases.check_on_rtl(device, program, program.quantize_input(x[:2]))
    monkeypatch.setattr(stream, "_segment", lambda graph, config: (len(graph.layers), {}))
    every_map = striate.compile(Shrinking(), x, config=CONFIG, timing=TIMING,
                                streaming="always")
    assert not any(every_map.stream.kept)
    assert timeline.program_counters(program).cycles < \
        timeline.program_counters(every_map).cycles


def test_a_map_kept_on_chip_is_read_before_a_later_one_takes_its_bytes():
    """`StreamPlan.survivors`: an output kept on chip is readable after a run unless a later
    layer writes its bytes, the network's output too, which is also stored."""
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    plan = striate.compile(Shrinking(), x, config=CONFIG, timing=TIMING,
                           streaming="always").stream
    plan = dataclasses.replace(plan, stamped=(True, True, True, True),
                               kept=(None, (0, 64), (64, 64), None),
                               written=(None, (0, 64), (64, 64), (32, 16)))
    assert plan.survivors(4) == (0, 2, 3)
    assert plan.survivors(3) == (0, 1, 2)
