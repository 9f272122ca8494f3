"""Writes finished output pixels (``pe_out`` channels) into the output activation bank."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ...sw.mapping.layout import writes_per_pixel
from .layouts import Layouts


class Writer(wiring.Component):
    """Stores each pixel at word ``out_base + tag.pix + sub * out_hw`` of the bank for each
    word ``sub`` its ``pe_out`` channels touch (`striate.sw.mapping.layout`; ``tag.pix`` locates the
    first, see `striate.hw.core.window.WindowGen`). Words whose channels all lie at or past ``out_c``
    are not written: they are outside the output map (``ceil(out_c / pe_in)`` word groups), where
    other live maps may be, and the write cycle passes with no byte enabled.

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
            # A word past the map's last channel group is skipped, not written with zeros.
            inside = (tag.og << lpo) + (sub << lpi) < self.out_c
            enables = Mux(inside, Const((1 << pi) - 1, pi), 0)
        else:
            # Lane l of the word holds channel word_first + l; this pixel's channels go to the
            # lanes of its slot. The last channel group also zeroes the lanes past out_c that
            # no group covers, so every lane of the map holds what `layout` says.
            slot = tag.og % share
            word_first = (tag.og - slot) << lpo
            values = [Mux(word_first + l < self.out_c, ybits.word_select(l % po, 8), 0)
                      for l in range(pi)]
            enables = Cat(*[(slot == l // po) | (word_first + l >= self.out_c)
                            for l in range(pi)])
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
