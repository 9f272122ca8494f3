"""The activation memory plan: where every tensor of a graph lives in the activation pool.

One pool of ``act_bytes`` holds every int8 tensor while it is alive: from the layer that writes
it (the network input: before the first layer) to the last layer that reads it (the network
output: to the end of the run). Two tensors alive at the same time never overlap. The planner is
greedy, largest tensor first, each at the lowest offset that clears every placed tensor it is
alive with (TensorFlow Lite Micro's greedy planner works the same way); the two inputs of an
add start on words of different parity where the memory allows, so that the add reads both in
one cycle (`striate.hw.core.eltwise`). When the pool is large
enough it places each tensor clear of every other one instead, so that every layer's output is
still intact after a run (the driver then reads every layer without reruns); it never gives up a
plan that fits for that. A concatenation's inputs are views: they lie inside its buffer, which
is alive from the first of them being written to its last read (`merge`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import INPUT, QGraph


@dataclass(frozen=True)
class Buffer:
    """One tensor in the pool: ``[first, last]`` is its lifetime in layer indices (-1: before
    the first layer; ``len(layers)``: after the last), ``addr`` and ``size`` in bytes."""

    name: str
    size: int
    first: int
    last: int
    addr: int = -1

    def alive_with(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last

    def overlaps(self, other: "Buffer") -> bool:
        return self.addr < other.addr + other.size and other.addr < self.addr + self.size


def lifetimes(graph: QGraph, size_of) -> list:
    """A `Buffer` (unplaced) per tensor: the input and every layer's output."""
    n = len(graph.layers)
    last = {INPUT: -1}
    for i, layer in enumerate(graph.layers):
        last[layer.name] = i
        for name in layer.inputs:
            last[name] = i
    last[graph.output] = n
    buffers = [Buffer(INPUT, size_of(INPUT), -1, last[INPUT])]
    buffers += [Buffer(layer.name, size_of(layer.name), i, last[layer.name])
                for i, layer in enumerate(graph.layers)]
    return buffers


def _fits(buf: Buffer, addr: int, rivals: list, capacity: int) -> bool:
    return addr + buf.size <= capacity and all(
        addr >= p.addr + p.size or p.addr >= addr + buf.size for p in rivals)


def _place(buffers: list, capacity: int, conflicts, apart: dict, word: int) -> list | None:
    """Greedy placement, largest first, each at the lowest address that fits; ``conflicts(a,
    b)`` says whether two buffers may not overlap. A buffer whose ``apart`` partners are placed
    prefers a start word of the other parity than theirs. None if some buffer does not fit
    ``capacity``."""
    placed = {}
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        rivals = [p for p in placed.values() if conflicts(buf, p)]
        starts = sorted({0, *(p.addr + p.size for p in rivals)})
        fitting = [a for s in starts for a in (s, s + word) if _fits(buf, a, rivals, capacity)]
        if not fitting:
            return None
        partners = [placed[n] for n in apart.get(buf.name, ()) if n in placed]
        preferred = [a for a in fitting
                     if all((a // word) % 2 != (p.addr // word) % 2 for p in partners)]
        addr = min(preferred or fitting)
        placed[buf.name] = Buffer(buf.name, buf.size, buf.first, buf.last, addr)
    return list(placed.values())


def merge(buffers: list, views: dict) -> list:
    """The buffers to place when some tensors are views (``views``: tensor -> (tensor it lies
    in, byte offset), possibly a view itself): every other buffer, each alive from the first
    write of any tensor inside it to the last read of any."""
    def root(name):
        while name in views:
            name = views[name][0]
        return name
    span = {}
    for buf in buffers:
        first, last = span.get(root(buf.name), (buf.first, buf.last))
        span[root(buf.name)] = (min(first, buf.first), max(last, buf.last))
    return [Buffer(b.name, b.size, *span[b.name]) for b in buffers if b.name not in views]


def spread(placed: list, buffers: list, views: dict) -> list:
    """``placed`` (from `merge`d buffers) with the views added at their addresses."""
    where = {b.name: b for b in placed}

    def addr(name):
        if name in views:
            outer, offset = views[name]
            return addr(outer) + offset
        return where[name].addr
    return [Buffer(b.name, b.size, b.first, b.last, addr(b.name)) for b in buffers]


def plan(buffers: list, capacity: int, apart: dict | None = None, word: int = 1,
         views: dict | None = None) -> list | None:
    """Placed buffers (each clear of every other one if that fits, else of those alive with
    it), or None when even the liveness plan does not fit ``capacity``. ``apart`` maps a tensor
    to those it should start on a word (``word`` bytes) of the other parity than: the two
    inputs of an add, which the hardware then reads in one cycle. ``views`` (see `merge`) lie
    inside other buffers and take no space of their own."""
    views = views or {}
    apart = {name: [p for p in partners if p not in views]
             for name, partners in (apart or {}).items() if name not in views}
    roots = merge(buffers, views)
    kept = _place(roots, capacity, lambda a, b: True, apart, word)
    placed = kept or _place(roots, capacity, Buffer.alive_with, apart, word)
    return None if placed is None else spread(placed, buffers, views)


def peak(buffers: list) -> tuple[int, int]:
    """``(bytes, layer)``: the most bytes alive at once and the first layer where that is."""
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    totals = [(sum(b.size for b in buffers if b.first <= t <= b.last), t) for t in steps]
    best = max(total for total, _ in totals)
    return best, next(t for total, t in totals if total == best)
