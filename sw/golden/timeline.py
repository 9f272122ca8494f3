"""Cycle model of a configuration with external memory: the two engines and the transfers.

`run` follows the sequencer of `striate.hw.core.engines` through a program of layers and
transfers, cycle by cycle where it matters: its front end (``PEEK``, ``OP``, fetch, the
shift-add checks, waits for the engines), the datapath's time per layer (`cycles.compute_run`),
and each transfer on the DMA engine (`transfer`) against the
memory model (`striate.sw.config.MemoryTiming`). It predicts the counters exactly wherever
`cycles.layer_cycles` does: CYCLES, and the LAYER_CYCLES word of each stamped descriptor.

Cycles are numbered from the sequencer's first cycle after START (CYCLES counts it as 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AcceleratorConfig, MemoryTiming
from ..mapping import derive
from ..mapping.descriptor import OP_DW, MoveDescriptor
from ..mapping.memmap import PROGRAM, TABLES
from . import cycles as layer_model

BEAT = 8
BURST_BEATS = 32            # `striate.hw.core.dma`
FIFO_INNER = 15             # its burst queue: a SyncFIFOBuffered of 16 (15 in its memory)
OUTSTANDING = 16
MOVE_WORDS = -(-MoveDescriptor.total_bits() // 32)


@dataclass
class _Memory:
    """The state the memory model carries from one transfer to the next."""
    timing: MemoryTiming
    last_beat: int = -(1 << 30)     # cycle of the last data beat (its credit refills after)


def _bursts(move: MoveDescriptor):
    """(chunk's first burst?, beats, first beat has 1 word?, last has 1 word?) per burst, in
    the order the engine issues them."""
    for c in range(move.count):
        ext = move.ext_addr + c * move.ext_stride
        end = ext + move.length
        beat, last = ext // BEAT, (end - 1) // BEAT
        first_of_chunk = True
        while beat <= last:
            stop = min(beat | (BURST_BEATS - 1), last)
            yield first_of_chunk, stop - beat + 1, beat == ext // BEAT and ext % BEAT != 0, \
                stop == last and end % BEAT != 0
            first_of_chunk = False
            beat = stop + 1


def transfer(move: MoveDescriptor, start: int, memory: _Memory) -> int:
    """The cycle a transfer started (``m_start``) in cycle ``start`` is done on (the
    sequencer's ``m_done``); updates ``memory``."""
    interval, latency = memory.timing.beat_interval, memory.timing.latency
    narrow = move.target in (PROGRAM, TABLES) and not move.store
    heads, pops, responses = [], [], []
    ar = start                  # each chunk starts with a setup cycle
    prev_beat = memory.last_beat
    prev_issue = prev_accept = None     # stores: the last beat's local read and acceptance
    for k, (new_chunk, beats, skip_first, skip_last) in enumerate(_bursts(move)):
        ar += 2 if new_chunk else 1                     # a setup cycle per chunk
        if k >= FIFO_INNER:                             # the queue's memory is full
            ar = max(ar, heads[k - FIFO_INNER])
        if move.store and k >= OUTSTANDING:             # write responses outstanding
            ar = max(ar, responses[k - OUTSTANDING] + 1)
        head = ar + 2 if k == 0 else max(ar + 2, pops[k - 1] + 1)
        heads.append(head)
        if not move.store:
            ready = max(head, ar + latency)
            for j in range(beats):
                second = not (skip_last and j == beats - 1)     # the beat's high word
                t = max(ready if j == 0 else 0, prev_beat + interval)
                # a narrow target takes a beat of two words in two cycles
                prev_beat = t + (narrow and second)
            pops.append(prev_beat)
        else:
            for j in range(beats):
                c = max(head if j == 0 else 0, prev_accept if prev_accept is not None else 0)
                prev_issue = c
                accept = max(c + 1, ar + 1, prev_beat + interval)
                prev_beat = prev_accept = accept
            pops.append(prev_issue)
            responses.append(max(prev_accept + latency, responses[-1] + 1 if responses else 0))
    memory.last_beat = prev_beat
    if move.store:
        return responses[-1] + 1
    return pops[-1] + 1


def transfer_cycles(move: MoveDescriptor, timing: MemoryTiming) -> int:
    """Cycles a transfer takes from its start to its end on a memory no transfer used just
    before (`transfer`)."""
    return transfer(move, 0, _Memory(timing))


@dataclass(frozen=True)
class Timeline:
    """Predicted counters: CYCLES, and the LAYER_CYCLES stamps in order; ``times`` holds
    each step's (start, done) cycles (when its engine starts it and when it ends)."""
    cycles: int
    stamps: tuple
    times: tuple = ()


def run(steps, config: AcceleratorConfig, timing: MemoryTiming, bound: bool = False) -> Timeline:
    """The counters of a program: ``steps`` in program order, each ``(layer, descriptor)``
    for a layer (its `QLayer` and `LayerDescriptor`) or ``(None, move)`` for a transfer.
    Exact unless a layer may stall (`cycles.may_stall`); then a lower bound, and with
    ``bound`` an upper one (the machine's times only grow with a layer's)."""
    memory = _Memory(timing)
    c_done = m_done = -1        # the cycle each engine is free from
    stamps = {}
    order = []
    times = []
    peek = 0
    for layer, desc in steps:
        if layer is None:
            fields = {f: getattr(desc, f) for f in ("target", "local_stride", "count", "length",
                                                    "local_addr", "ext_stride", "ext_addr")}
            done = peek + 2 + MOVE_WORDS + derive.move_cycles(fields, config)
            w = max(done + 1, m_done, c_done if desc.wait else 0)
            start = w + 2
            m_done = transfer(desc, start, memory)
            times.append((start, m_done))
            after = m_done if desc.target == PROGRAM else start
            if desc.stamp:
                order.append(id(desc))
                stamps[id(desc)] = m_done + 1
        else:
            # the fetch and the sizes, then the wait for the engines; without
            # `overlap_setup` the wait comes first
            fetch = peek + 2
            free = max(c_done, m_done if desc.wait else 0)
            if not config.overlap_setup:
                fetch = max(fetch, free) + 1
            start = max(fetch + layer_model.setup_cycles(layer, desc, config), free) + 2
            c_done = start + layer_model.compute_run(layer, desc, config, bound)
            times.append((start, c_done))
            after = start
            if desc.stamp:
                order.append(id(desc))
                stamps[id(desc)] = c_done + 1
        peek = after + 2
    end = max(peek, c_done, m_done)
    return Timeline(cycles=end + 1, stamps=tuple(stamps[key] for key in order),
                    times=tuple(times))


def program_counters(program, bound: bool = False,
                     timing: MemoryTiming | None = None) -> Timeline:
    """The counters of a `Program` on its configuration with external memory, for the memory
    ``timing`` (default: the one it was compiled for; `run`)."""
    return run(program.steps, program.config, timing or program.timing, bound)


def may_stall(program) -> bool:
    """Whether some layer (or tile) of ``program`` may stall (the counters then lie between
    `program_counters` and its ``bound``)."""
    return any(layer is not None and layer_model.may_stall(layer, program.config,
                                                           desc.op == OP_DW, desc.psum_out,
                                                           bool(desc.pair), bool(desc.merge))
               for layer, desc in program.steps)


def per_layer(program, bound: bool = False, timing: MemoryTiming | None = None) -> list[int]:
    """Predicted cycles per layer (as the driver spreads the stamps: 0 for a concatenation);
    ``bound``: see `run`; ``timing``: see `program_counters`."""
    from ..mapping.memmap import layer_cycles
    from ..mapping.mapper import spread
    executed = program.stream.executed if program.stream else program.plan.executed
    return spread(executed, layer_cycles(program_counters(program, bound, timing).stamps))


def mismatch(program, layer_cycles, cycles: int) -> str:
    """Why the counters of a run of ``program`` (per layer, as the driver spreads them, and
    CYCLES) are not what the cycle model says, or "" if they are: exact where no layer may
    stall, else each layer's end within its bounds (a layer that stalls delays what follows,
    and hides more of the next layer's set-up)."""
    import numpy as np
    if cycles != sum(layer_cycles):
        return f"CYCLES {cycles} is not the sum of the layers' {sum(layer_cycles)}"
    done = np.cumsum(layer_cycles)
    low = np.cumsum(layer_model.program_cycles(program))
    high = np.cumsum(layer_model.program_cycles(program, True)) if may_stall(program) else low
    for i, layer in enumerate(program.layers):
        if not low[i] <= done[i] <= high[i]:
            says = f"{low[i]} to {high[i]}" if high[i] > low[i] else f"{low[i]}"
            return (f"layer {i} ('{layer.name}') ended at cycle {done[i]}, the cycle model "
                    f"says {says}")
    return ""
