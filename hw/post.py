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

    Parameters of channel group ``og`` are read from the parameter memory row ``p_base + og``
    (`striate.sw.layout.pack_params`). Three stages: parameter read, multiply, shift and clamp.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        po = layouts.config.pe_out
        super().__init__({
            "i": In(stream.Signature(layouts.sums)),
            "o": Out(stream.Signature(layouts.pixels)),
            "p_base": In(layouts.p_addr), "lo": In(signed(8)), "hi": In(signed(8)),
            "p_addr": Out(layouts.p_addr), "p_en": Out(1),
            "p_data": In(32 * PARAM_ENTRY_WORDS * po),
        })

    def elaborate(self, platform):
        m = Module()
        po = self._l.config.pe_out
        advance = ~self.o.valid | self.o.ready
        entry = data.StructLayout({"bias": signed(32), "mult": unsigned(32),
                                   "shift": unsigned(32), "unused": 32})
        params = data.ArrayLayout(entry, po)(self.p_data)
        v1, v2 = Signal(), Signal()
        acc1 = [Signal(ACC, name=f"acc1_{r}") for r in range(po)]
        prod = [Signal(signed(66), name=f"prod{r}") for r in range(po)]
        shift2 = [Signal(range(numerics.SHIFT_MAX + 2), name=f"shift{r}") for r in range(po)]
        tag1, tag2 = Signal(self._l.tag), Signal(self._l.tag)
        m.d.comb += [self.i.ready.eq(advance), self.p_en.eq(advance),
                     self.p_addr.eq(self.p_base + self.i.payload.tag.og)]
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), tag1.eq(self.i.payload.tag),
                         v2.eq(v1), tag2.eq(tag1), self.o.valid.eq(v2),
                         self.o.payload.tag.eq(tag2)]
            for r in range(po):
                p = params[r]
                m.d.sync += [acc1[r].eq(self.i.payload.acc[r]),
                             prod[r].eq((acc1[r] + p.bias) * p.mult[:31]),
                             shift2[r].eq(p.shift[:6]),
                             self.o.payload.y[r].eq(
                                 clamp(round_shift(prod[r], shift2[r]), self.lo, self.hi))]
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
