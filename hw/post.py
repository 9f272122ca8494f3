"""Requantization and pooling behind the PE array (the numerics contract in hardware).

Both are single-enable pipelines like `pe`: every stage advances when the output is free.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw import numerics
from ..sw.memmap import PARAM_ENTRY_WORDS
from .layouts import ACC, Layouts


def round_shift(product, shift):
    """``(product + 2**(shift-1)) >> shift`` as ``((product >> (shift-1)) + 1) >> 1``: the same
    value (floors nest), without a variable-width rounding constant."""
    return ((product >> (shift - 1).as_unsigned()) + 1) >> 1


def clamp(value, lo, hi):
    return Mux(value < lo, lo, Mux(value > hi, hi, value))


class Requant(wiring.Component):
    """``y = clamp(round_shift((acc + bias) * mult, shift), lo, hi)`` per output channel.

    ``requant_parallel`` (R) channels per cycle: each item is split into ``pe_out / R`` lane
    groups that flow through three stages (parameter read, multiply, shift and clamp) and are
    assembled into the output pixel. Group ``j`` of channel group ``og`` reads parameter memory
    row ``p_base + og * pe_out / R + j`` (`striate.sw.layout.pack_params`). With R < pe_out an
    accepted item waits in a holding register, so items arriving at least ``pe_out / R``
    cycles apart never stall the PE array.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        lanes = layouts.config.requant_parallel
        super().__init__({
            "i": In(stream.Signature(layouts.sums)),
            "o": Out(stream.Signature(layouts.pixels)),
            "p_base": In(layouts.p_addr), "lo": In(signed(8)), "hi": In(signed(8)),
            "p_addr": Out(layouts.p_addr), "p_en": Out(1),
            "p_data": In(32 * PARAM_ENTRY_WORDS * lanes),
        })

    def elaborate(self, platform):
        m = Module()
        po, lanes = self._l.config.pe_out, self._l.config.requant_parallel
        steps = po // lanes
        advance = ~self.o.valid | self.o.ready
        entry = data.StructLayout({"bias": signed(32), "mult": unsigned(32),
                                   "shift": unsigned(32), "unused": 32})
        params = data.ArrayLayout(entry, lanes)(self.p_data)
        j, j1, j2 = (Signal(range(max(2, steps)), name=n) for n in ("j", "j1", "j2"))
        v1, v2, last1, last2 = Signal(), Signal(), Signal(), Signal()
        acc1 = [Signal(ACC, name=f"acc1_{r}") for r in range(lanes)]
        prod = [Signal(signed(66), name=f"prod{r}") for r in range(lanes)]
        shift2 = [Signal(range(numerics.SHIFT_MAX + 2), name=f"shift{r}") for r in range(lanes)]
        tag1, tag2 = Signal(self._l.tag), Signal(self._l.tag)
        last = j == steps - 1
        if steps == 1:          # one lane group: straight from the input
            valid0, tag0, acc_bits = self.i.valid, self.i.payload.tag, self.i.payload.acc.as_value()
            m.d.comb += self.i.ready.eq(advance)
        else:                   # several: work from a holding register
            held = Signal.like(self.i.payload)
            valid0, tag0, acc_bits = Signal(), held.tag, held.acc.as_value()
            m.d.comb += self.i.ready.eq(advance & (~valid0 | last))
            with m.If(self.i.ready):
                m.d.sync += [valid0.eq(self.i.valid), held.eq(self.i.payload)]
        m.d.comb += [self.p_en.eq(advance), self.p_addr.eq(self.p_base + tag0.og * steps + j)]
        with m.If(advance):
            m.d.sync += [v1.eq(valid0), tag1.eq(tag0), j1.eq(j),
                         last1.eq(last), v2.eq(v1), tag2.eq(tag1), j2.eq(j1), last2.eq(last1),
                         self.o.valid.eq(v2 & last2), self.o.payload.tag.eq(tag2)]
            with m.If(valid0):
                m.d.sync += j.eq(Mux(last, 0, j + 1))
            for r in range(lanes):
                p = params[r]
                m.d.sync += [acc1[r].eq(acc_bits.word_select(j * lanes + r, 32).as_signed()),
                             prod[r].eq((acc1[r] + p.bias) * p.mult[:31]),
                             shift2[r].eq(p.shift[:6])]
                y = clamp(round_shift(prod[r], shift2[r]), self.lo, self.hi)
                for group in range(steps):
                    with m.If(v2 & (j2 == group)):
                        m.d.sync += self.o.payload.y[group * lanes + r].eq(y)
        return m


class Pool(wiring.Component):
    """Max or average pooling over the items between ``pool_first`` and ``pool_last``.

    ``mode`` 0 passes items through (each is its own window), 1 keeps the maximum, 2 sums and
    requantizes the sum with ``mult`` / ``shift`` (``1 / (kh * kw)`` folded in), clamped to
    ``[lo, hi]``.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        super().__init__({
            "i": In(stream.Signature(layouts.pixels)),
            "o": Out(stream.Signature(layouts.pixels)),
            "mode": In(2), "mult": In(31), "shift": In(6),
            "lo": In(signed(8)), "hi": In(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        po = self._l.config.pe_out
        advance = ~self.o.valid | self.o.ready
        acc = [Signal(ACC, name=f"pacc{r}") for r in range(po)]
        out1 = [Signal(ACC, name=f"pout{r}") for r in range(po)]
        v1 = Signal()
        tag1 = Signal(self._l.tag)
        p = self.i.payload
        m.d.comb += self.i.ready.eq(advance)
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid & p.tag.pool_last), tag1.eq(p.tag),
                         self.o.valid.eq(v1), self.o.payload.tag.eq(tag1)]
            for r in range(po):
                y = p.y[r]
                merged = Mux(p.tag.pool_first, y,
                             Mux(self.mode == 2, acc[r] + y, Mux(y > acc[r], y, acc[r])))
                with m.If(self.i.valid):
                    m.d.sync += [acc[r].eq(merged), out1[r].eq(merged)]
                avg = clamp(round_shift(out1[r] * self.mult, self.shift), self.lo, self.hi)
                m.d.sync += self.o.payload.y[r].eq(Mux(self.mode == 2, avg, out1[r]))
        return m
