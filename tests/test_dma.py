"""Transfers between the external memory and the on-chip memories, on the RTL: contents, error
codes and counters against `striate.sw.golden.timeline` (exact)."""

import numpy as np
import pytest

from striate.sw.config import AcceleratorConfig, MemoryTiming
from striate.sw.golden import timeline
from striate.sw.mapping import memmap
from striate.sw.mapping.descriptor import MOVE_TARGETS, MoveDescriptor
from striate.sw.runtime.program import Program

from rtl_cases import random_chain, random_inputs

CONFIG = AcceleratorConfig(pe_out=8, pe_in=4, act_bytes=4096, act_banks=4, weight_bytes=4096,
                           param_entries=64, program_depth=16, ext_bytes=1 << 16, max_width=16,
                           max_height=16, activation_tables=2)
EXT = CONFIG.ext_bytes
ACT, WEIGHTS, PARAMS, PROGRAM, TABLES = (MOVE_TARGETS[n] for n in
                                         ("act", "weights", "params", "program", "tables"))
MEMS = memmap.memories(CONFIG)


def size(target):
    return MEMS[target].depth * MEMS[target].row_bytes


def read_onchip(t, target):
    shape = MEMS[target]
    return shape.from_bus(t.read(memmap.address(target), shape.depth * shape.row_words))


def apply(move, ext, onchip):
    """The reference: what a transfer does to the byte arrays."""
    local = onchip[move.target]
    for i in range(move.count):
        e, l = move.ext_addr + i * move.ext_stride, move.local_addr + i * move.local_stride
        if move.store:
            ext[e:e + move.length] = local[l:l + move.length]
        else:
            local[l:l + move.length] = ext[e:e + move.length]


def random_move(rng, store=False, target=None):
    target = target or (ACT if store else int(rng.choice([ACT, ACT, WEIGHTS, PARAMS, TABLES])))
    unit = 4 if target == ACT else 8
    limit = size(target)
    if target == TABLES:
        limit = min(limit, 256)     # the first table only: later ones hold the next layer's
    count = int(rng.integers(1, 5))
    length = unit * int(rng.integers(1, min(80, limit // unit // count) + 1))
    if rng.random() < 0.3:      # a narrow tile's rows: many chunks of a few words
        count = int(rng.integers(5, 48))
        length = unit * int(rng.integers(1, 6))
    local_stride = length + unit * int(rng.integers(0, 8))
    while (count - 1) * local_stride + length > limit:
        local_stride = length
        count = max(1, count - 1)
    local = unit * int(rng.integers(0, (limit - (count - 1) * local_stride - length) // unit + 1))
    ext_stride = length + unit * int(rng.integers(0, 40))
    span = (count - 1) * ext_stride + length
    ext = unit * int(rng.integers(0, (EXT - span) // unit + 1))
    return MoveDescriptor(op=0, store=int(store), target=target, ext_addr=ext, local_addr=local,
                          length=length, count=count, ext_stride=ext_stride,
                          local_stride=local_stride, stamp=int(rng.random() < 0.7),
                          wait=int(rng.random() < 0.3))


def start(t, descriptors, layers=None):
    words = [w for d in descriptors for w in d.to_words()]
    t.write(memmap.address(memmap.PROGRAM), words)
    t.write(memmap.address(memmap.REG, memmap.LAYERS), [layers or len(descriptors)])
    t.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.START])


def finish(t, budget=2_000_000):
    for _ in range(budget // 500):
        t.wait(500)
        if not t.read(memmap.address(memmap.REG, memmap.STATUS))[0] & memmap.BUSY:
            break
    status = int(t.read(memmap.address(memmap.REG, memmap.STATUS))[0])
    error = int(t.read(memmap.address(memmap.REG, memmap.ERROR))[0])
    return status, error


def counters(t, stamps):
    return (int(t.read(memmap.address(memmap.REG, memmap.CYCLES))[0]),
            tuple(int(v) for v in t.read(memmap.address(memmap.REG, memmap.LAYER_CYCLES),
                                         stamps)) if stamps else ())


@pytest.fixture(scope="module")
def ext_device():
    from striate.sim.fastsim import VerilatorTransport
    made = {}

    def get(timing):
        if timing not in made:
            made[timing] = VerilatorTransport(CONFIG, timing=timing)
        return made[timing]
    yield get
    for t in made.values():
        t.close()


TIMINGS = [MemoryTiming(100, 8), MemoryTiming(100, 2), MemoryTiming(1, 8), MemoryTiming(7, 3),
           MemoryTiming(37, 1)]


@pytest.mark.parametrize("timing", TIMINGS, ids=str)
def test_random_transfers_move_the_bytes_in_the_cycles_the_model_says(ext_device, timing):
    t = ext_device(timing)
    rng = np.random.default_rng(timing.latency * 10 + timing.bytes_per_cycle)
    for trial in range(6):
        ext = rng.integers(0, 256, EXT, dtype=np.uint8)
        t.write_ext(0, ext)
        onchip = {target: read_onchip(t, target) for target in (ACT, WEIGHTS, PARAMS, TABLES)}
        moves = [random_move(rng, store=rng.random() < 0.35) for _ in range(rng.integers(1, 7))]
        start(t, moves)
        assert finish(t) == (memmap.DONE, 0)
        for move in moves:
            apply(move, ext, onchip)
        for target, want in onchip.items():
            np.testing.assert_array_equal(read_onchip(t, target), want, err_msg=str(target))
        np.testing.assert_array_equal(t.read_ext(0, EXT), ext)
        want = timeline.run([(None, m) for m in moves], CONFIG, timing)
        assert counters(t, len(want.stamps)) == (want.cycles, want.stamps), (trial, moves)


def test_transfers_into_the_program_memory_run_a_program_longer_than_it(ext_device):
    """The program memory is a ring of 16 slots: descriptor 2 refills slots 0 and 1 (which
    have run) with descriptors 16 and 17, and descriptor 16 refills slots 2 to 5 with 18 to
    21; the sequencer reads on into them."""
    timing = MemoryTiming(20, 4)
    t = ext_device(timing)
    rng = np.random.default_rng(5)
    ext = rng.integers(0, 256, EXT, dtype=np.uint8)
    base, slot = 0x8000, 4 * MoveDescriptor.WORDS     # the later descriptors, a slot's bytes

    def load(i):
        return MoveDescriptor(op=0, target=ACT, ext_addr=64 * i, local_addr=64 * i, length=64,
                              count=1, stamp=i % 2)     # (16 LAYER_CYCLES words)

    def refill(first, slots, count):
        return MoveDescriptor(op=0, target=PROGRAM, ext_addr=base + (first - 16) * slot,
                              local_addr=slots * slot, length=count * slot, count=1, stamp=1)
    sequence = [load(i) for i in range(22)]
    sequence[2] = refill(16, 0, 2)
    sequence[16] = refill(18, 2, 4)
    later = np.array([w for d in sequence[16:] for w in d.to_words()], "<u4").view(np.uint8)
    ext[base:base + len(later)] = later
    t.write_ext(0, ext)
    start(t, sequence[:16], layers=len(sequence))
    assert finish(t) == (memmap.DONE, 0)
    act = read_onchip(t, ACT)
    loads = [m for m in sequence if m.target == ACT]
    assert len(loads) == 20
    for move in loads:
        np.testing.assert_array_equal(act[move.local_addr:move.local_addr + 64],
                                      ext[move.ext_addr:move.ext_addr + 64])
    want = timeline.run([(None, m) for m in sequence], CONFIG, timing)
    assert counters(t, len(want.stamps)) == (want.cycles, want.stamps)


ERROR_CASES = {
    "unknown target": (dict(target=0), memmap.E_OP),
    "target past the last": (dict(target=7), memmap.E_OP),
    "store from the weights": (dict(store=1, target=WEIGHTS), memmap.E_OP),
    "zero length": (dict(length=0), memmap.E_ZERO),
    "zero count": (dict(count=0), memmap.E_ZERO),
    "activation bytes not in words": (dict(local_addr=2), memmap.E_ALIGN),
    "weights not in beats": (dict(target=WEIGHTS, ext_addr=4), memmap.E_ALIGN),
    "stride not in words": (dict(count=2, ext_stride=66), memmap.E_ALIGN),
    "past the activation memory": (dict(local_addr=4096 - 32), memmap.E_LOCAL),
    "strided past it": (dict(count=100, local_stride=64), memmap.E_LOCAL),
    "past the external memory": (dict(ext_addr=EXT - 32), memmap.E_EXT),
    "strided past it too": (dict(count=1000, ext_stride=128, local_stride=0), memmap.E_EXT),
    "store past it": (dict(store=1, ext_addr=EXT - 8, length=16), memmap.E_EXT),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_illegal_transfers_stop_with_their_code_and_move_nothing(ext_device, case):
    t = ext_device(MemoryTiming(10, 8))
    rng = np.random.default_rng(len(case))
    ext = rng.integers(0, 256, EXT, dtype=np.uint8)
    t.write_ext(0, ext)
    before = {target: read_onchip(t, target) for target in (ACT, WEIGHTS, PARAMS)}
    good = MoveDescriptor(op=0, target=ACT, ext_addr=512, local_addr=256, length=64, count=1,
                          stamp=1)
    fields, code = ERROR_CASES[case]
    bad = MoveDescriptor(**{**dict(op=0, target=ACT, ext_addr=0, local_addr=0, length=64,
                                   count=1, ext_stride=64, local_stride=64), **fields})
    start(t, [good, bad, good])
    status, error = finish(t)
    assert (status, error) == (memmap.FAILED, code)
    assert int(t.read(memmap.address(memmap.REG, memmap.LAYER))[0]) == 1
    apply(good, ext, before)
    for target, want in before.items():
        np.testing.assert_array_equal(read_onchip(t, target), want)
    np.testing.assert_array_equal(t.read_ext(0, EXT), ext)


def _layer_program(seed):
    graph, rng = random_chain(seed, layers=1, max_channels=8, max_width=10)
    return Program(graph, CONFIG), rng


def test_a_layer_and_transfers_in_other_banks_run_side_by_side(ext_device):
    """A transfer after a layer starts while the layer runs (its counters say so) and both
    results are right; a layer with ``wait`` starts only after the transfers."""
    timing = MemoryTiming(10, 8)
    t = ext_device(timing)
    for seed in range(4):
        program, rng = _layer_program(seed)
        layer, desc = program.layers[0], program.descriptors[0]
        x = random_inputs(rng, 1, program.graph.input_shape)
        from striate.sw.runtime import image
        for addr, words in image.program_image(program):
            t.write(addr, words)
        addr, words = image.input_image(program, x[0])
        t.write(addr, words)
        ext = rng.integers(0, 256, EXT, dtype=np.uint8)
        t.write_ext(0, ext)
        # the last bank is free of the layer's maps (they are at the start of the pool)
        free = 3 * 1024
        moves = [MoveDescriptor(op=0, target=ACT, ext_addr=4096, local_addr=free, length=32,
                                count=2, ext_stride=1024, local_stride=32, stamp=1),
                 MoveDescriptor(op=0, store=1, target=ACT, ext_addr=8192, local_addr=free,
                                length=64, count=1, stamp=1)]
        again = desc.__class__(**{**desc.__dict__, "wait": 1})
        sequence = [desc, moves[0], moves[1], again]
        start(t, sequence)
        assert finish(t) == (memmap.DONE, 0)
        got = image.decode_output(program, 0, t.read(*image.output_location(program, 0)))
        np.testing.assert_array_equal(got, program.run_reference(x)[0])
        want = timeline.run([(layer, desc), (None, moves[0]), (None, moves[1]),
                             (layer, again)], CONFIG, timing)
        assert counters(t, 4) == (want.cycles, want.stamps)
        serial = timeline.run([(layer, desc), (None, moves[0].__class__(
            **{**moves[0].__dict__, "wait": 1})), (None, moves[1]), (layer, again)], CONFIG,
            timing)
        assert want.cycles < serial.cycles          # the load ran while the layer did
        np.testing.assert_array_equal(t.read_ext(8192, 64),
                                      np.concatenate([ext[4096:4128], ext[5120:5152]]))


def test_transfers_into_memory_a_running_layer_uses_are_refused(ext_device):
    t = ext_device(MemoryTiming(30, 1))     # slow: the layer's checks come while a load runs
    program, rng = _layer_program(7)
    from striate.sw.runtime import image
    for addr, words in image.program_image(program):
        t.write(addr, words)
    desc = program.descriptors[0]
    plan = program.plan
    clashes = [
        MoveDescriptor(op=0, target=ACT, ext_addr=0, local_addr=plan.act_in[0][0], length=8,
                       count=1),
        MoveDescriptor(op=0, target=ACT, ext_addr=0, local_addr=plan.act_out[0][0], length=8,
                       count=1),
        MoveDescriptor(op=0, target=WEIGHTS, ext_addr=0, local_addr=plan.weight[0][0],
                       length=8, count=1),
        MoveDescriptor(op=0, target=PARAMS, ext_addr=0, local_addr=0, length=8, count=1),
        MoveDescriptor(op=0, store=1, target=ACT, ext_addr=0, local_addr=plan.act_out[0][0],
                       length=8, count=1),
    ]
    for move in clashes:
        start(t, [desc, move])
        assert finish(t) == (memmap.FAILED, memmap.E_BUSY), move
        # with wait, the same transfer is legal
        start(t, [desc, move.__class__(**{**move.__dict__, "wait": 1})])
        assert finish(t) == (memmap.DONE, 0), move
    # a layer may not start while a transfer runs in its banks, unless it waits
    load = MoveDescriptor(op=0, target=ACT, ext_addr=0, local_addr=plan.act_out[0][0],
                          length=1024, count=1)
    start(t, [load, desc])
    assert finish(t) == (memmap.FAILED, memmap.E_BUSY)
    start(t, [load, desc.__class__(**{**desc.__dict__, "wait": 1})])
    assert finish(t) == (memmap.DONE, 0)


def test_the_amaranth_simulation_agrees(ext_device):
    from striate.sim.pysim import PysimTransport
    timing = MemoryTiming(12, 4)
    rng = np.random.default_rng(3)
    moves = [random_move(rng, store=s) for s in (False, False, True, False)]
    moves.append(random_move(rng, target=TABLES))
    ext = rng.integers(0, 256, EXT, dtype=np.uint8)
    results = []
    for t in (PysimTransport(CONFIG, timing), ext_device(timing)):
        t.write_ext(0, ext)
        start(t, moves)
        assert finish(t) == (memmap.DONE, 0)
        results.append((counters(t, sum(m.stamp for m in moves)), t.read_ext(0, EXT),
                        read_onchip(t, ACT), read_onchip(t, TABLES)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    want = timeline.run([(None, m) for m in moves], CONFIG, timing)
    assert results[0][0] == (want.cycles, want.stamps)
