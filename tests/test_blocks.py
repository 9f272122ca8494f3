"""Datapath blocks in the Amaranth simulator, with random valid/ready stalls on both sides,
each against the `striate.sw` function it implements."""

import random
from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from striate.hw.core import scale
from striate.hw.core.eltwise import AddLanes
from striate.hw.core.layouts import Layouts
from striate.hw.core.pe import MacArray
from striate.hw.core.post import Pool, Requant, SerialPost
from striate.hw.core.skid import Skid
from striate.hw.core.window import WindowGen
from striate.hw.core.writer import Writer
from striate.sw.mapping import layout
from striate.sw.ir import numerics
from striate.sw.config import AcceleratorConfig
from striate.sw.ir.kernels import out_size

CONFIGS = [AcceleratorConfig(pe_out=4, pe_in=2), AcceleratorConfig(pe_out=2, pe_in=4),
           AcceleratorConfig(pe_out=1, pe_in=1)]
IDS = ["4x2", "2x4", "1x1"]


def simulate(top, dut, inputs, expect_outputs, stall=0.4, seed=0, setup=None, max_ticks=20000):
    """Push ``inputs`` (payload consts) into ``dut.i`` and collect ``expect_outputs`` payloads
    from ``dut.o``, each side stalling at random."""
    rng = random.Random(seed)
    outputs = []
    sim = Simulator(top)
    sim.add_clock(1e-6)

    async def source(ctx):
        if setup:
            setup(ctx)
        for payload in inputs:
            while rng.random() < stall:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, payload)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        sink_rng = random.Random(seed + 1)
        while len(outputs) < expect_outputs:
            ctx.set(dut.o.ready, 0)
            while sink_rng.random() < stall:
                await ctx.tick()
            ctx.set(dut.o.ready, 1)
            payload, = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            outputs.append(payload)
        ctx.set(dut.o.ready, 0)

    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return outputs


@pytest.mark.parametrize("stages", [0, 1, 2])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_mac_array_accumulates_chunks(config, stages):
    """Each pixel's sums, both sides stalling at random, with and without the register stages
    of `AcceleratorConfig.mac_stages`."""
    config = replace(config, mac_stages=stages)
    rng = np.random.default_rng(1)
    dut = MacArray(Layouts(config))
    po, pi = config.pe_out, config.pe_in
    items, expected = [], []
    for pixel in range(12):
        chunks = int(rng.integers(1, 5))
        acc = np.zeros(po, np.int64)
        for k in range(chunks):
            x = rng.integers(-128, 128, pi)
            w = rng.integers(-127, 128, (po, pi))
            acc += w @ x
            items.append(dut.i.payload.shape().const(
                {"x": x.tolist(), "w": w.reshape(-1).tolist(), "first": k == 0,
                 "last": k == chunks - 1, "tag": {"og": pixel}}))
        expected.append(acc)
    outs = simulate(dut, dut, items, len(expected))
    for pixel, (out, want) in enumerate(zip(outs, expected)):
        assert list(out.acc) == want.tolist() and out.tag.og == pixel


@pytest.mark.parametrize("entries,stages", [(8, 0), (16, 0), (8, 2), (16, 1)])
def test_mac_array_keeps_partial_sums_across_chunks(entries, stages):
    """Chunks of a layer's input channels, one run each (``start``): the first writes each
    conv pixel's sums to the partial-sum memory (``psum_out``), the middle ones add to them
    and write them back, the last adds to them and emits the totals; each chunk takes its own
    number of items per pixel, both sides stalling at random. A layer without the flags after
    them sums from zero again; with and without the extra register stages (``stages``)."""
    config = AcceleratorConfig(pe_out=4, pe_in=2, psum_entries=entries, mac_stages=stages)
    dut = MacArray(Layouts(config))
    po, pi = config.pe_out, config.pe_in
    rng = np.random.default_rng(entries)
    pixels = 8
    chunks = [(0, 1), (1, 1), (1, 1), (1, 0), (0, 0)]
    totals = np.zeros((pixels, po), np.int64)
    runs = []
    for flags in chunks:
        if flags == (0, 0):
            totals[:] = 0
        items = []
        for pixel in range(pixels):
            count = int(rng.integers(1, 4))
            for k in range(count):
                x = rng.integers(-128, 128, pi)
                w = rng.integers(-127, 128, (po, pi))
                totals[pixel] += w @ x
                items.append(dut.i.payload.shape().const(
                    {"x": x.tolist(), "w": w.reshape(-1).tolist(), "first": k == 0,
                     "last": k == count - 1, "tag": {"og": pixel}}))
        runs.append((flags, items, totals.copy() if not flags[1] else None))
    outputs = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    stall = random.Random(entries)

    async def bench(ctx):
        for (psum_in, psum_out), items, want in runs:
            ctx.set(dut.psum_in, psum_in)
            ctx.set(dut.psum_out, psum_out)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            got, pending = [], list(items)
            for _ in range(2000):
                ready = stall.random() >= 0.4
                ctx.set(dut.o.ready, ready)
                if pending and stall.random() >= 0.4:
                    ctx.set(dut.i.valid, 1)
                    ctx.set(dut.i.payload, pending[0])
                else:
                    ctx.set(dut.i.valid, 0)
                taken = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
                if ctx.get(dut.o.valid) and ready:
                    got.append(ctx.get(dut.o.payload))
                await ctx.tick()
                if taken:
                    pending.pop(0)
                if not pending and len(got) == (0 if psum_out else pixels):
                    break
            ctx.set(dut.i.valid, 0)
            for _ in range(8):      # the last pixel reaches the memory; nothing else leaves
                ctx.set(dut.o.ready, 1)
                assert not ctx.get(dut.o.valid)
                await ctx.tick()
            outputs.append(got)
            if want is not None:
                assert [list(o.acc) for o in got] == want.tolist()
                assert [o.tag.og for o in got] == list(range(pixels))

    sim.add_testbench(bench)
    sim.run()
    assert [len(o) for o in outputs] == [0, 0, 0, pixels, pixels]


class _WithMemory(Elaboratable):
    """Wrap a block with a real synchronous-read memory on one of its read interfaces."""

    def __init__(self, dut, init, width, addr, en, data):
        self.dut, self.init, self.width = dut, init, width
        self.ports = (addr, en, data)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.mem = mem = Memory(shape=self.width, depth=len(self.init), init=self.init)
        rp = mem.read_port()
        addr, en, data = self.ports
        m.d.comb += [rp.addr.eq(addr), rp.en.eq(en), data.eq(rp.data)]
        return m


SERIAL = [AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=1, serial_scale_bits=2),
          AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=2, serial_scale_bits=3),
          AcceleratorConfig(pe_out=2, pe_in=4, serial_scale_bits=31)]
SERIAL_IDS = ["4x2-serial2-lanes1", "4x2-serial3-lanes2", "2x4-serial31"]


def test_round_clamp_matches_the_contract():
    """Every shift, products across the whole 64-bit range and at the saturation edges."""
    rng = random.Random(7)
    product, shift = Signal(scale.PRODUCT), Signal(6)
    lo, hi = Signal(signed(8)), Signal(signed(8))
    m = Module()
    y = Signal(signed(8))
    m.d.comb += y.eq(scale.round_clamp(product, shift, lo, hi))
    cases = []
    for s in range(numerics.SHIFT_MIN, numerics.SHIFT_MAX + 1):
        edges = [k << (s - 1) for k in (-259, -258, -257, -256, -255, 253, 254, 255, 256, 257)]
        for p in edges + [rng.randrange(-(1 << 63), 1 << 63) >> rng.randrange(64)
                          for _ in range(12)]:
            p = max(-(1 << 63), min((1 << 63) - 1, p + rng.choice([-1, 0, 1])))
            cases.append((p, s, rng.choice([-128, -100, 0]), rng.choice([127, 90, 5])))
    sim = Simulator(m)
    got = []

    async def bench(ctx):
        for p, s, l, h in cases:
            ctx.set(product, p)
            ctx.set(shift, s)
            ctx.set(lo, l)
            ctx.set(hi, h)
            got.append(ctx.get(y))
    sim.add_testbench(bench)
    sim.run()
    want = [min(h, max(l, (p + (1 << (s - 1))) >> s)) for p, s, l, h in cases]
    assert got == want


@pytest.mark.parametrize("stages", [1, 2])
def test_staged_round_clamp_is_round_clamp_later(stages):
    """With `AcceleratorConfig.round_stages` registers the same results, ``stages`` cycles
    later, under an enable that drops at random (values stay in the stages meanwhile)."""
    rng = random.Random(stages)
    product, shift, enable = Signal(scale.PRODUCT), Signal(6), Signal()
    lo, hi = Signal(signed(8)), Signal(signed(8))
    m = Module()
    y = Signal(signed(8))
    with m.If(enable):
        m.d.sync += y.eq(scale.staged_round_clamp(m, product, shift, lo, hi, stages, "t"))
    cases = [(rng.randrange(-(1 << 63), 1 << 63) >> rng.randrange(64),
              rng.randrange(numerics.SHIFT_MIN, numerics.SHIFT_MAX + 1)) for _ in range(400)]
    sim = Simulator(m)
    sim.add_clock(1e-6)
    got = []

    async def bench(ctx):
        ctx.set(lo, -128)
        ctx.set(hi, 127)
        n = 0
        while len(got) < len(cases):
            on = rng.random() < 0.7
            if on:
                if n < len(cases):
                    ctx.set(product, cases[n][0])
                    ctx.set(shift, cases[n][1])
                n += 1
            ctx.set(enable, on)
            await ctx.tick()
            if on and n > stages:
                got.append(ctx.get(y))
    sim.add_testbench(bench)
    sim.run()
    assert got == [min(127, max(-128, (p + (1 << (s - 1))) >> s)) for p, s in cases]


@pytest.mark.parametrize("config", CONFIGS + [AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=1),
                                    AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=2),
                                    AcceleratorConfig(pe_out=4, pe_in=2, round_stages=1),
                                    AcceleratorConfig(pe_out=4, pe_in=2, split_products=True),
                                    AcceleratorConfig(pe_out=8, pe_in=2, requant_lanes=2,
                                                      round_stages=2, split_products=True)]
                         + SERIAL, ids=IDS + ["4x2-lanes1", "4x2-lanes2", "4x2-round1",
                                              "4x2-split", "8x2-lanes2-round2-split"]
                         + SERIAL_IDS)
def test_requant_matches_the_contract(config):
    rng = np.random.default_rng(2)
    po, lanes = config.pe_out, config.requant_parallel
    groups = 3
    bias = rng.integers(-50000, 50000, groups * po)
    mult = rng.integers(1 << 30, 1 << 31, groups * po)
    shift = rng.integers(28, 45, groups * po)
    shift[::3] = rng.integers(numerics.SHIFT_MIN, numerics.SHIFT_MAX + 1, len(shift[::3]))
    rows = []
    for row_index in range(groups * po // lanes):     # parameter memory rows of `lanes` entries
        row = 0
        for lane in range(lanes):
            c = row_index * lanes + lane
            entry = (int(bias[c]) & 0xFFFFFFFF) | int(mult[c]) << 32 | int(shift[c]) << 64
            row |= entry << (128 * lane)
        rows.append(row)
    serial = bool(config.serial_scale_bits)      # requant + pool in one block, pool mode none
    dut = (SerialPost if serial else Requant)(Layouts(config))
    top = _WithMemory(dut, rows, 128 * lanes, dut.p_addr, dut.p_en, dut.p_data)
    one_pixel = {"pool_first": 1, "pool_last": 1} if serial else {}
    lo, hi = -100, 90
    items, expected = [], []
    for n in range(40):
        g = int(rng.integers(0, groups))
        acc = rng.integers(-(1 << 24), 1 << 24, po)
        acc[0] = int(rng.choice([-(1 << 31) + 60000, (1 << 31) - 60000, acc[0]]))
        ch = slice(g * po, (g + 1) * po)
        expected.append(numerics.requantize(acc + bias[ch], mult[ch], shift[ch], lo, hi))
        items.append(dut.i.payload.shape().const({"acc": acc.tolist(),
                                                  "tag": {"og": g, **one_pixel}}))

    def setup(ctx):
        ctx.set(dut.p_base, 0)
        ctx.set(dut.lo, lo)
        ctx.set(dut.hi, hi)
    outs = simulate(top, dut, items, len(items), setup=setup)
    for out, want in zip(outs, expected):
        assert list(out.y) == want.tolist()


NO_AVG = replace(SERIAL[0], avg_pool=False)
DEPTHWISE = AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=1, depthwise_kernel=2)
POOL_CASES = [pytest.param(mode, config, dw, id=f"{mode}-{name}")
              for config, name, dw in (
                  (CONFIGS[0], "4x2", False), (CONFIGS[2], "1x1", False),
                  (AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=1), "4x2-lanes1", False),
                  (AcceleratorConfig(pe_out=8, pe_in=2, requant_lanes=2), "8x2-lanes2", False),
                  (AcceleratorConfig(pe_out=4, pe_in=2, round_stages=1), "4x2-round1", False),
                  (AcceleratorConfig(pe_out=4, pe_in=2, split_products=True), "4x2-split", False),
                  (AcceleratorConfig(pe_out=8, pe_in=2, requant_lanes=2, round_stages=2,
                                     split_products=True), "8x2-lanes2-round2-split", False),
                  (DEPTHWISE, "4x2-lanes1-dwconfig", False), (DEPTHWISE, "4x2-lanes1-dwpixel", True),
                  (SERIAL[0], "4x2-serial", False), (SERIAL[2], "2x4-serial31", False),
                  (NO_AVG, "4x2-serial-no-avg", False))
              for mode in ("none", "max", "avg") if config.avg_pool or mode != "avg"]


@pytest.mark.parametrize("mode, config, dw", POOL_CASES)
def test_pool_matches_the_contract(mode, config, dw):
    """Pool alone; for serial configurations the combined block, with parameters that make its
    requantization the identity (``y * 2**30 >> 30``). Windows come back to back, so a pool
    that scales an average in several lane groups makes the next window wait. A depthwise
    pixel (``dw``) of channel group ``og`` holds its ``pe_in`` channels in lanes from
    ``(og % (pe_out / pe_in)) * pe_in`` on; only those are compared."""
    rng = np.random.default_rng(3)
    po = config.pe_out
    serial = bool(config.serial_scale_bits)
    dut = (SerialPost if serial else Pool)(Layouts(config))
    top = dut
    if serial:
        lanes = config.requant_parallel
        identity = sum(((1 << 30) << 32 | 30 << 64) << (128 * lane) for lane in range(lanes))
        top = _WithMemory(dut, [identity] * (po // lanes), 128 * lanes, dut.p_addr, dut.p_en,
                          dut.p_data)
    window = 6 if mode != "none" else 1
    mult, shift = numerics.quantize_multiplier(1 / window) if mode == "avg" else (0, 0)
    lo, hi = -20, 100
    items, expected = [], []
    ogs = rng.integers(0, 4, 15)
    for n in range(15):
        ys = rng.integers(lo, hi + 1, (window, po))
        for k in range(window):
            tag = {"pool_first": k == 0, "pool_last": k == window - 1, "pix": n,
                   "og": int(ogs[n])}
            items.append(dut.i.payload.shape().const(
                {"acc" if serial else "y": ys[k].tolist(), "tag": tag}))
        if mode == "avg":
            expected.append(numerics.requantize(ys.sum(0), mult, shift, lo, hi))
        else:
            expected.append(ys.max(0))

    def setup(ctx):
        ctx.set(dut.mode, {"none": 0, "max": 1, "avg": 2}[mode])
        ctx.set(dut.mult, mult)
        ctx.set(dut.shift, shift)
        ctx.set(dut.lo, lo)
        ctx.set(dut.hi, hi)
        if serial:
            ctx.set(dut.p_base, 0)
        if config.depthwise_kernel:
            ctx.set(dut.dw, dw)
    outs = simulate(top, dut, items, len(expected), setup=setup)
    pi = config.pe_in
    for n, (out, want) in enumerate(zip(outs, expected)):
        lanes = slice(None)
        if dw:
            first = int(ogs[n]) % (po // pi) * pi
            lanes = slice(first, first + pi)
        assert list(out.y)[lanes] == want.tolist()[lanes] and out.tag.pix == n


def first_word_group(og, config):
    """The first activation word group output channel group ``og`` writes."""
    return og * config.pe_out // config.pe_in


def window_reference(g):
    """The window generator's item sequence, as a plain Python loop nest. With ``merge``
    (merged lanes) odd kernel columns skip the last channel group, whose items at even columns
    also read the next column (its padding ``pad2``), and each item says whether it merges."""
    items = []
    merge = g.get("merge", 0)
    kk = g["k_h"] * (g["k_w"] * g["cg_n"] - (g["k_w"] // 2 if merge else 0))
    for og in range(g["og_n"]):
        for py in range(g["out_h"]):
            for px in range(g["out_w"]):
                y0, x0 = py * g["ps_h"] - g["pp_h"], px * g["ps_w"] - g["pp_w"]
                cys = range(max(0, y0), min(g["conv_h"], y0 + g["pk_h"]))
                cxs = range(max(0, x0), min(g["conv_w"], x0 + g["pk_w"]))
                for cy in cys:
                    for cx in cxs:
                        k = 0
                        for ky in range(g["k_h"]):
                            for kx in range(g["k_w"]):
                                odd = merge and kx % 2
                                for cg in range(g["cg_n"] - odd):
                                    iy = cy * g["s_h"] + ky - g["p_h"]
                                    ix = cx * g["s_w"] + kx - g["p_w"]
                                    pad = not (0 <= iy < g["in_h"] and 0 <= ix < g["in_w"])
                                    merged = bool(merge) and cg == g["cg_n"] - 1
                                    pad2 = not (0 <= iy < g["in_h"] and 0 <= ix + 1 < g["in_w"])
                                    hole = pad and (pad2 or not merged)
                                    addr = 0 if hole else g["in_base"] + cg * g["in_h"] * \
                                        g["in_w"] + iy * g["in_w"] + ix
                                    last = k == kk - 1
                                    pix = first_word_group(og, g["config"]) * g["out_h"] * \
                                        g["out_w"] + py * g["out_w"] + px
                                    item = (addr, pad, og * g["kk"] + k, k == 0, last, og,
                                            pix, (cy, cx) == (cys[0], cxs[0]),
                                            (cy, cx) == (cys[-1], cxs[-1]))
                                    if g["config"].pairs:
                                        item += (merged, pad2 if merged else pad)
                                    items.append(item)
                                    k += 1
    return items


@pytest.mark.parametrize("seed", range(30))
def test_window_generator_walks_the_loop_nest(seed):
    """Seeds 12 to 17: configurations without pool padding (pooling windows start inside the
    conv map); from 18 on, merged lanes on a configuration with pixel pairs (one to three
    channel groups, kernels up to 5 columns)."""
    rng = np.random.default_rng(seed)
    config = CONFIGS[seed % len(CONFIGS)]
    if 12 <= seed < 18:
        config = replace(config, pool_padding=False)
    merge = int(seed >= 18)
    if merge:
        config = replace(CONFIGS[0], pool_padding=bool(seed % 2))     # 4 x 2: pairs
    dut = WindowGen(Layouts(config))
    in_h, in_w = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    k_h, k_w = int(rng.integers(1, 4)), int(rng.integers(1, 6 if merge else 4))
    p_h, p_w = int(rng.integers(0, k_h)), int(rng.integers(0, k_w))
    s_h, s_w = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    conv_h, conv_w = out_size(in_h, k_h, s_h, p_h), out_size(in_w, k_w, s_w, p_w)
    pk_h, pk_w = int(rng.integers(1, min(conv_h, 3) + 1)), int(rng.integers(1, min(conv_w, 3) + 1))
    pp_h, pp_w = int(rng.integers(0, pk_h // 2 + 1)), int(rng.integers(0, pk_w // 2 + 1))
    if not config.pool_padding:
        pp_h = pp_w = 0
    ps_h, ps_w = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    g = dict(cg_n=int(rng.integers(1, 4 if merge else 3)), in_h=in_h, in_w=in_w, k_h=k_h,
             k_w=k_w, s_h=s_h, s_w=s_w, p_h=p_h, p_w=p_w, conv_h=conv_h, conv_w=conv_w,
             pk_h=pk_h, pk_w=pk_w,
             ps_h=ps_h, ps_w=ps_w, pp_h=pp_h, pp_w=pp_w, og_n=int(rng.integers(1, 3)),
             out_h=out_size(conv_h, pk_h, ps_h, pp_h), out_w=out_size(conv_w, pk_w, ps_w, pp_w),
             in_base=5)
    g["kk"] = k_h * (k_w * g["cg_n"] - (k_w // 2 if merge else 0))
    g["hw_in"] = in_h * in_w
    if config.pairs:
        g["merge"] = merge
    g.update(s_w_in=s_h * in_w, step_y=ps_h * s_h, step_x=ps_w * s_w, step_yw=ps_h * s_h * in_w,
             rys0=pp_h * s_h, rxs0=pp_w * s_w, rysw0=pp_h * s_h * in_w, p_row=p_h * in_w,
             out_hw=g["out_h"] * g["out_w"])
    want = window_reference(dict(g, config=config))
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    srng = random.Random(seed)

    async def bench(ctx):
        for name, value in g.items():
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.w_base, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        while len(got) < len(want):
            ctx.set(dut.o.ready, srng.random() > 0.3)
            *_, valid, ready, p = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                t = p.tag
                got.append((p.act_addr, p.pad, p.w_addr, p.first, p.last, t.og, t.pix,
                            t.pool_first, t.pool_last)
                           + ((p.merge, p.pad2) if config.pairs else ()))
        ctx.set(dut.o.ready, 1)
        for _ in range(3):
            await ctx.tick()
        assert ctx.get(dut.done) and not ctx.get(dut.o.valid)
    sim.add_testbench(bench)
    sim.run()
    assert [tuple(int(v) for v in item) for item in got] == \
        [tuple(int(v) for v in item) for item in want]


@pytest.mark.parametrize("slot", [None, 0, 2])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_writer_stores_the_bank_layout(config, slot):
    """Every pixel lands at its words, nothing outside the map is touched; with a table
    (``slot`` of the table memory) the values are looked up, channels past the map's last
    stay 0."""
    rng = np.random.default_rng(4)
    po, pi = config.pe_out, config.pe_in
    out_c, out_h, out_w = int(rng.integers(1, 3 * po + 1)), 3, 2
    og_n = -(-out_c // po)
    full = rng.integers(-128, 128, (og_n * po, out_h, out_w)).astype(np.int8)
    dut = Writer(Layouts(config))
    groups = -(-out_c // pi)
    # Room for every word group a pixel's pe_out channels could touch, filled with a sentinel:
    # words outside the map's ceil(out_c / pe_in) groups must keep it (other maps live there).
    depth = 2 + max(groups, og_n * po // pi) * out_h * out_w + 4
    sentinel = (1 << 8 * pi) - 1 - 0x5A
    mem = Memory(shape=8 * pi, depth=depth, init=[sentinel] * depth)

    tables = rng.integers(-128, 128, (config.activation_tables, 256)).astype(np.int8)
    words = tables.view("<u4").reshape(-1).tolist()

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut
            m.submodules.mem = mem
            wp = mem.write_port(granularity=8)
            m.d.comb += [wp.addr.eq(dut.wr_addr), wp.data.eq(dut.wr_data), wp.en.eq(dut.wr_en)]
            for lane in range(pi):          # a copy of the table memory per lane
                table_mem = Memory(shape=32, depth=len(words), init=words)
                m.submodules[f"table{lane}"] = table_mem
                rp = table_mem.read_port()
                m.d.comb += [rp.addr.eq(dut.t_addr[lane]), dut.t_data[lane].eq(rp.data)]
            return m
    items = [dut.i.payload.shape().const({"y": full[og * po:(og + 1) * po, py, px].tolist(),
                                          "tag": {"og": og, "pix": first_word_group(og, config)
                                                  * out_h * out_w + py * out_w + px}})
             for og in range(og_n) for py in range(out_h) for px in range(out_w)]
    rng_order = random.Random(5)
    rng_order.shuffle(items)
    sim = Simulator(Top())
    sim.add_clock(1e-6)
    srng = random.Random(6)

    async def bench(ctx):
        ctx.set(dut.out_base, 2)
        ctx.set(dut.out_c, out_c)
        ctx.set(dut.out_hw, out_h * out_w)
        ctx.set(dut.table, 0 if slot is None else slot + 1)
        for payload in items:
            while srng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, payload)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        for _ in range(max(1, po // pi) + 2):     # the last pixel's write cycles, lookup
            await ctx.tick()
        stored = [ctx.get(mem.data[a]) for a in range(depth)]
        end = 2 + groups * out_h * out_w
        got = b"".join(w.to_bytes(pi, "little") for w in stored[2:end])
        assert stored[:2] + stored[end:] == [sentinel] * (depth - end + 2)
        expected = full.copy() if slot is None else \
            tables[slot][full.astype(np.int64) + 128]
        expected[out_c:] = 0
        np.testing.assert_array_equal(
            layout.unpack_activation(got, (out_c, out_h, out_w), config), expected[:out_c])
        assert bytes(layout.pack_activation(expected[:out_c], config)) == got
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("stages, rounding", [(0, 0), (1, 0), (2, 0), (0, 1), (2, 2)])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_add_lanes_match_the_contract(config, stages, rounding):
    """The add's lanes against `numerics.add`: random words, multipliers over the whole 16-bit
    range and shifts over the whole range, extremes included, with random stalls, with and
    without the register stages of `AcceleratorConfig.mac_stages` and ``round_stages``."""
    config = replace(config, mac_stages=stages, round_stages=rounding)
    rng = np.random.default_rng(5)
    dut = AddLanes(Layouts(config))
    lanes = config.pe_in
    a = rng.integers(-128, 128, (60, lanes))
    b = rng.integers(-128, 128, (60, lanes))
    a[::7], b[::5] = -128, 127
    mult_a, mult_b = int(rng.integers(0, 1 << 16)), (1 << 16) - 1
    for shift, lo, hi in ((16, -128, 127), (1, 0, 127), (numerics.ADD_SHIFT_MAX, -128, 127),
                          (9, 0, 37)):
        items = [dut.i.payload.shape().const({"a": x.tolist(), "b": y.tolist()})
                 for x, y in zip(a, b)]
        want = numerics.add(a, b, mult_a, mult_b, shift, lo, hi)

        def setup(ctx, shift=shift, lo=lo, hi=hi):
            for name, value in (("mult_a", mult_a), ("mult_b", mult_b), ("shift", shift),
                                ("lo", lo), ("hi", hi)):
                ctx.set(getattr(dut, name), value)
        outs = simulate(dut, dut, items, len(items), setup=setup, seed=shift)
        assert [list(o.y) for o in outs] == want.tolist()


@pytest.mark.parametrize("stall", [0.0, 0.2, 0.6])
def test_skid_buffer_passes_every_item_in_order(stall):
    """The skid buffer keeps the item its producer gave in the cycle the consumer stalled and
    passes it first: every item once, in order, under random stalls on both sides."""
    dut = Skid(data.StructLayout({"x": 12, "tag": 1}))
    rng = np.random.default_rng(3)
    xs = rng.integers(0, 1 << 12, 200).tolist()
    items = [dut.i.payload.shape().const({"x": x, "tag": x & 1}) for x in xs]
    outs = simulate(dut, dut, items, len(items), stall=stall, seed=int(stall * 10))
    assert [(o.x, o.tag) for o in outs] == [(x, x & 1) for x in xs]
