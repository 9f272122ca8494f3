"""Writes finished output pixels (``pe_out`` channels) into the output activation bank."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...sw.mapping.descriptor import LayerDescriptor
from ...sw.mapping.layout import writes_per_pixel
from ...sw.mapping.memmap import TABLE_WORDS
from .layouts import Layouts, depthwise_port


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

    With pixel pairs (``pair``, `AcceleratorConfig.pairs`) an item is two neighbouring pixels
    of one row, the first in the lower half of the lanes, the second in the upper: ``tag.pix``
    counts pairs, the first pixel's word offset is ``2 * tag.pix`` and the second's one more,
    and each half's words are written as a pixel's (out_hw, from the sequencer, counts
    columns, not pairs).

    With ``activation_tables`` each word passes a register stage before it is written, in which
    each lane reads its table memory copy (``t_addr[l]``: row ``(table - 1) * TABLE_WORDS +
    (v + 128) / 4``; ``t_data[l]``, a cycle later, holds the entry in byte ``(v + 128) % 4``);
    when ``table`` is nonzero the entries are written instead of the values (channels past
    ``out_c`` stay zero). Writes and ``written`` then come one cycle later.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        cfg = layouts.config
        ports = {
            "i": In(stream.Signature(layouts.pixels)),
            "out_base": In(layouts.act_addr), "out_c": In(16), "out_hw": In(layouts.act_addr),
            "wr_addr": Out(layouts.act_addr), "wr_data": Out(8 * cfg.pe_in),
            "wr_en": Out(cfg.pe_in), "written": Out(1),
        }
        ports.update(depthwise_port(cfg))
        if cfg.pairs:
            ports["pair"] = In(1)
        if cfg.activation_tables:
            ports.update({"table": In(LayerDescriptor.bits("table")),
                          "t_addr": Out(data.ArrayLayout(layouts.t_addr, cfg.pe_in)),
                          "t_data": In(data.ArrayLayout(32, cfg.pe_in))})
        super().__init__(ports)

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
        sub_off = Signal(self._l.act_addr)       # sub * out_hw (of a pair: within its half)
        ybits = held.y.as_value()
        pixel, csub, half_end = tag.pix, sub, Const(0)
        if self._l.config.pairs:
            # word sub of a pair: its pixel (sub's top bit) and the word within that pixel
            lh = (words // 2).bit_length() - 1
            second = sub[lh] & self.pair
            pixel = Mux(self.pair, Cat(second, tag.pix), tag.pix)
            csub = Mux(self.pair, sub[:lh], sub)
            half_end = self.pair & (sub == words // 2 - 1)
        if po >= pi:
            raw = [ybits.word_select(sub * pi + l, 8) for l in range(pi)]
            channel = [(tag.og << lpo) + (csub << lpi) + l < self.out_c for l in range(pi)]
            # A word past the map's last channel group is skipped, not written with zeros.
            inside = (tag.og << lpo) + (csub << lpi) < self.out_c
            enables = Mux(inside, Const((1 << pi) - 1, pi), 0)
        else:
            # Lane l of the word holds channel word_first + l; this pixel's channels go to the
            # lanes of its slot. The last channel group also zeroes the lanes past out_c that
            # no group covers, so every lane of the map holds what `layout` says.
            slot = tag.og % share
            word_first = (tag.og - slot) << lpo
            raw = [ybits.word_select(l % po, 8) for l in range(pi)]
            channel = [word_first + l < self.out_c for l in range(pi)]
            enables = Cat(*[(slot == l // po) | (word_first + l >= self.out_c)
                            for l in range(pi)])
        last = sub == words - 1
        if self._l.config.depthwise_kernel:
            # A depthwise pixel is one word: channel group og's pe_in channels, in the lanes
            # of row group og % (pe_out / pe_in) (`striate.hw.core.pe.MacArray`).
            lpp = (po // pi).bit_length() - 1
            sel = tag.og[:lpp]
            raw = [Mux(self.dw, ybits.word_select(sel, 8 * pi).word_select(l, 8), v)
                   for l, v in enumerate(raw)]
            channel = [Mux(self.dw, (tag.og << lpi) + l < self.out_c, c)
                       for l, c in enumerate(channel)]
            enables = Mux(self.dw, Const((1 << pi) - 1, pi), enables)
            last = self.dw | last
        values = [Mux(c, v, 0) for c, v in zip(channel, raw)]
        write = [self.out_base + pixel + sub_off, Cat(*[v[:8] for v in values]),
                 Mux(busy, enables, 0), busy & last]
        if self._l.config.activation_tables:
            write = self._look_up(m, raw, channel, write)
        m.d.comb += [self.wr_addr.eq(write[0]), self.wr_data.eq(write[1]),
                     self.wr_en.eq(write[2]), self.written.eq(write[3])]
        m.d.comb += self.i.ready.eq(~busy | last)
        with m.If(busy):
            m.d.sync += [sub.eq(Mux(last, 0, sub + 1)),
                         sub_off.eq(Mux(last | half_end, 0, sub_off + self.out_hw))]
        with m.If(self.i.ready):
            m.d.sync += [busy.eq(self.i.valid), held.eq(self.i.payload)]
        return m

    def _look_up(self, m, raw, channel, write):
        """The write (address, data, enables, written) one cycle later, with each lane's value
        (``raw``) replaced by its table entry when ``table`` is nonzero and the lane holds a
        channel (``channel``; past ``out_c`` it stays zero)."""
        pi = self._l.config.pe_in
        later = [Signal.like(w, name=f"{n}_t") for w, n in zip(write, ("addr", "data", "en",
                                                                       "written"))]
        m.d.sync += [r.eq(w) for r, w in zip(later, write)]
        index = [Signal(8, name=f"index{l}") for l in range(pi)]  # v + 128
        sel = [Signal(2, name=f"sel{l}") for l in range(pi)]
        inside = [Signal(name=f"inside{l}") for l in range(pi)]   # past out_c: 0 stays
        looked = Signal()
        base = ((self.table - 1) << (TABLE_WORDS.bit_length() - 1))[:len(self.t_addr[0])]
        for l in range(pi):
            m.d.comb += [index[l].eq(raw[l] ^ 0x80),
                         self.t_addr[l].eq(base + index[l][2:])]
            m.d.sync += [sel[l].eq(index[l][:2]), inside[l].eq(channel[l])]
        m.d.sync += looked.eq(self.table != 0)
        entries = [Mux(looked & inside[l], self.t_data[l].word_select(sel[l], 8),
                       later[1].word_select(l, 8)) for l in range(pi)]
        return [later[0], Cat(*entries), later[2], later[3]]
