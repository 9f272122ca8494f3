"""Writes finished output pixels (``pe_out`` channels) into the output activation bank."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.layout import writes_per_pixel
from .layouts import Layouts


class Writer(wiring.Component):
    """Stores each pixel at word ``out_base + tag.pix + sub * out_hw`` of the bank for each
    word ``sub`` its ``pe_out`` channels touch (`striate.sw.layout`; ``tag.pix`` locates the
    first, see `striate.hw.window.WindowGen`).

    With ``pe_out >= pe_in`` a pixel takes ``pe_out / pe_in`` write cycles; with fewer output
    than input lanes it fills part of a word through byte enables. Channels at or past ``out_c``
    are written as zero. ``written`` pulses when a pixel is complete. The pixel being written is
    held in a register and the next one is accepted in its last write cycle, so pixels arriving
    at least ``pe_out / pe_in`` cycles apart never stall the pipeline.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        cfg = layouts.config
        super().__init__({
            "i": In(stream.Signature(layouts.pixels)),
            "out_base": In(layouts.act_addr), "out_c": In(16), "out_hw": In(layouts.act_addr),
            "wr_addr": Out(layouts.act_addr), "wr_data": Out(8 * cfg.pe_in),
            "wr_en": Out(cfg.pe_in), "written": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        po, pi = self._l.config.pe_out, self._l.config.pe_in
        lpo, lpi = po.bit_length() - 1, pi.bit_length() - 1
        words = writes_per_pixel(self._l.config)   # write cycles per pixel
        share = max(1, pi // po)                 # pixels sharing one word
        held = Signal.like(self.i.payload)
        busy = Signal()
        tag = held.tag
        sub = Signal(range(max(2, words)))
        sub_off = Signal(self._l.act_addr)       # sub * out_hw
        ybits = held.y.as_value()
        if po >= pi:
            values = [Mux((tag.og << lpo) + (sub << lpi) + l < self.out_c,
                          ybits.word_select(sub * pi + l, 8), 0) for l in range(pi)]
            enables = Const((1 << pi) - 1, pi)
        else:
            slot = tag.og % share
            values = [Mux((tag.og << lpo) + l % po < self.out_c, ybits.word_select(l % po, 8), 0)
                      for l in range(pi)]
            enables = Cat(*[slot == l // po for l in range(pi)])
        m.d.comb += [
            self.wr_addr.eq(self.out_base + tag.pix + sub_off),
            self.wr_data.eq(Cat(*[v[:8] for v in values])),
            self.wr_en.eq(Mux(busy, enables, 0)),
        ]
        last = sub == words - 1
        m.d.comb += [self.i.ready.eq(~busy | last), self.written.eq(busy & last)]
        with m.If(busy):
            m.d.sync += [sub.eq(Mux(last, 0, sub + 1)),
                         sub_off.eq(Mux(last, 0, sub_off + self.out_hw))]
        with m.If(self.i.ready):
            m.d.sync += [busy.eq(self.i.valid), held.eq(self.i.payload)]
        return m
