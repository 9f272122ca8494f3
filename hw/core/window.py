"""The window generator: walks a layer's loop nest and emits one item of work per cycle.

Loop order (outermost first): output channel group ``og``, pooled output pixel ``(py, px)``, the
conv pixels ``(cy, cx)`` of its pooling window that lie inside the conv map, kernel offsets
``(ky, kx)``, input channel group ``g``. Each item names the activation word at input pixel
``(cy*s - p + ky, cx*s - p + kx)`` of group ``g`` (``pad`` when that lies outside the map, which
reads as zero) and the weight word ``[og][ky][kx][g]``. The whole map sits in the activation
bank, so windows are read from it directly, one word per cycle, instead of through line buffers
that would duplicate rows the bank already holds. With merged lanes (``merge``,
`striate.sw.mapping.descriptor.LayerDescriptor.merge`) odd ``kx`` skip the last group ``g``,
whose items at even ``kx`` also read the next column's word (``merge`` and ``pad2`` in the item).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import Layouts
from .sequencer import base_widths

FIELDS = {  # port: its width (a `Layouts` attribute); descriptor fields, unsigned,
    # stable while a layer runs, narrowed to what a layer that passed the checks needs
    "in_h": "rows", "in_w": "cols", "k_h": "rows", "k_w": "cols", "s_h": "stride",
    "s_w": "stride", "p_h": "pad", "p_w": "pad", "conv_h": "rows", "conv_w": "cols",
    "pk_h": "rows", "pk_w": "cols", "ps_h": "stride", "ps_w": "stride", "pp_h": "pad",
    "pp_w": "pad", "out_h": "rows", "out_w": "cols",
}
GROUPS = ("cg_n", "og_n")     # channel groups, from the sequencer (`base_widths`)
DERIVED = ("hw_in", "kk", "s_w_in", "step_y", "step_x", "step_yw", "rys0", "rxs0", "rysw0",
           "p_row", "out_hw")  # from the sequencer (`striate.sw.mapping.derive`), `Layouts.derived` wide


def _s(value):
    """Zero-extend an unsigned value by one bit and treat it as signed."""
    return Cat(value, Const(0, 1)).as_signed()


def _clip(start, value, padded, floor=0):
    """``value`` at a window start, or ``floor`` where the window starts above or left of the
    map (only with pool padding: otherwise starts are never negative)."""
    return Mux(start < 0, floor, value) if padded else value


def _min(a, b):
    return Mux(a < b, a, b)


class WindowGen(wiring.Component):
    """Emits the layer's work items on ``o`` after a ``start`` pulse; ``done`` rises once the
    last item has been accepted. ``writes`` pulses for each accepted item that completes an
    output pixel (``last`` and ``pool_last``).

    Each item's ``tag.pix`` is the output pixel's word offset in the output map without its
    lane group sub-word: ``group(og) * out_hw + py * out_w + px``, where ``group(og)`` is the
    first activation word group of output channel group ``og`` (`striate.sw.mapping.layout`)."""

    def __init__(self, layouts: Layouts):
        self._l = layouts
        ports = {name: In(getattr(layouts, width)) for name, width in FIELDS.items()}
        ports.update({name: In(base_widths(layouts)[name]) for name in GROUPS})
        ports.update({name: In(layouts.derived[name]) for name in DERIVED})
        if layouts.config.pairs:
            ports.update(pair=In(1), merge=In(1))
        ports.update({
            "in_base": In(layouts.act_addr), "w_base": In(layouts.w_addr),
            "start": In(1), "done": Out(1), "writes": Out(1),
            "o": Out(stream.Signature(layouts.window)),
        })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        lay = self._l
        padded = lay.config.pool_padding
        og, py, px = Signal(lay.p_addr + 1), Signal(lay.rows), Signal(lay.cols)
        pix, obase = Signal(lay.act_addr), Signal(lay.act_addr)
        # Widths a legal layer fits: conv coordinates (sizes of `Layouts.rows` / `cols` bits
        # plus a sign; pads are 3 bits), coordinates times a stride, and address terms
        # (`Layouts.size`).
        coord, scaled = signed(lay.rows + 2), signed(lay.rows + 2 + lay.stride)
        hcoord, hscaled = signed(lay.cols + 2), signed(lay.cols + 2 + lay.stride)
        wide = signed(lay.size + 2)
        cy, cx = Signal(coord), Signal(hcoord)
        ky, kx, g = Signal(lay.rows), Signal(lay.cols), Signal(lay.act_addr + 1)
        k, wog = Signal(lay.w_addr + 1), Signal(lay.w_addr)
        running = Signal()
        advance = ~self.o.valid | self.o.ready
        # Running products, so the walk needs no multipliers: ry/rx = window start
        # (py * ps - pp), rys/rxs = start * s, rysw = (start * s - p) * in_w, cys/cxs =
        # cy/cx * s, rowbase = (cy * s - p) * in_w, kyw = ky * in_w, goff = g * hw_in.
        ry, rx = Signal(coord), Signal(hcoord)
        rys, cys = Signal(scaled), Signal(scaled)
        rxs, cxs = Signal(hscaled), Signal(hscaled)
        rysw, rowbase = Signal(wide), Signal(wide)
        kyw, goff = Signal(lay.size), Signal(lay.act_addr + 1)
        s_w_in, step_y, step_x, step_yw = self.s_w_in, self.step_y, self.step_x, self.step_yw
        p_row = _s(self.p_row)
        if padded:
            ry0, rx0 = -_s(self.pp_h), -_s(self.pp_w)
            rys0, rxs0, rysw0 = -_s(self.rys0), -_s(self.rxs0), -_s(self.rysw0) - p_row
        else:   # every pooling window starts inside the conv map
            ry0 = rx0 = rys0 = rxs0 = Const(0, 2)
            rysw0 = -p_row

        # The pooling window's first conv row and column, and (registered on entering the
        # window) the ones after its last.
        cy_lo, cx_lo = _clip(ry, ry, padded), _clip(rx, rx, padded)
        cy_end, cx_end = Signal.like(ry, name="cy_end"), Signal.like(rx, name="cx_end")
        cy_last, cx_last = cy + 1 == cy_end, cx + 1 == cx_end
        # Whether each loop counter is at its last value, kept in registers beside the counters
        # (`first`, `step`) so that the walk's decisions are a few gates from registers.
        g_last, kx_last, ky_last = Signal(), Signal(), Signal()
        px_end, py_end, og_end = Signal(), Signal(), Signal()
        last_chunk = g_last & kx_last & ky_last
        pool_last = cy_last & cx_last
        iy = cys + _s(ky) - _s(self.p_h)
        ix = cxs + _s(kx) - _s(self.p_w)
        addr = self.in_base + goff + (rowbase + _s(kyw) + ix).as_unsigned()
        # Merged lanes (`LayerDescriptor.merge`): the last channel group is read at even
        # kernel columns only, each item taking that column's word and the next one's
        # (``solo``: a layer of one group then steps two columns an item).
        merge = self.merge if self._l.config.pairs else Const(0)
        solo = merge & (self.cg_n == 1)
        skips = merge & ~solo       # odd kernel columns skip the last group
        merged = merge & ~kx[0] & g_last
        self._emit(m, advance, running, og, pix, iy, ix, addr, k, wog, last_chunk,
                   (cy == cy_lo) & (cx == cx_lo), pool_last, merged)

        # Next pooled pixel and its window.
        n_ry, n_rx = Signal.like(ry, name="n_ry"), Signal.like(rx, name="n_rx")
        n_rys, n_rxs = Signal.like(rys, name="n_rys"), Signal.like(rxs, name="n_rxs")
        n_rysw = Signal.like(rysw, name="n_rysw")
        m.d.comb += [
            n_rx.eq(Mux(px_end, rx0, rx + _s(self.ps_w))),
            n_rxs.eq(Mux(px_end, rxs0, rxs + _s(step_x))),
            n_ry.eq(Mux(px_end, Mux(py_end, ry0, ry + _s(self.ps_h)), ry)),
            n_rys.eq(Mux(px_end, Mux(py_end, rys0, rys + _s(step_y)), rys)),
            n_rysw.eq(Mux(px_end, Mux(py_end, rysw0, rysw + _s(step_yw)), rysw)),
        ]
        m.d.comb += self.done.eq(~running & ~self.o.valid)

        def enter_window(y, ys, ysw, x, xs):
            """Start at the first conv pixel inside the window starting at (y, x)."""
            m.d.sync += [ry.eq(y), rx.eq(x), rys.eq(ys), rxs.eq(xs), rysw.eq(ysw),
                         cy_end.eq(_min(_s(self.conv_h), y + _s(self.pk_h))),
                         cx_end.eq(_min(_s(self.conv_w), x + _s(self.pk_w))),
                         cy.eq(_clip(y, y, padded)), cx.eq(_clip(x, x, padded)),
                         cys.eq(_clip(y, ys, padded)), cxs.eq(_clip(x, xs, padded)),
                         rowbase.eq(_clip(y, ysw, padded, floor=-p_row))]

        def first(counter, flag, limit):
            """``counter`` restarts at 0."""
            m.d.sync += [counter.eq(0), flag.eq(limit == 1)]

        def step(counter, flag, limit):
            """``counter`` moves on by one."""
            m.d.sync += [counter.eq(counter + 1), flag.eq(counter + 2 == limit)]

        def first_group(odd):
            """``g`` restarts at 0 in a kernel column that skips the last group if ``odd``."""
            m.d.sync += [g.eq(0), g_last.eq(Mux(odd, self.cg_n == 2, self.cg_n == 1))]

        def first_column():
            m.d.sync += [kx.eq(0), kx_last.eq(Mux(solo, self.k_w <= 2, self.k_w == 1))]

        def restart_kernel():
            m.d.sync += [k.eq(0), kyw.eq(0), goff.eq(0)]
            first_group(0)
            first_column()
            first(ky, ky_last, self.k_h)

        cfg = self._l.config
        if cfg.pe_out >= cfg.pe_in:     # each channel group starts writes_per_pixel groups on
            next_base = obase + (self.out_hw << (cfg.pe_out // cfg.pe_in).bit_length() - 1)
        else:                           # channel groups share words: a new one every `share`
            share = cfg.pe_in // cfg.pe_out
            next_base = Mux(og[:share.bit_length() - 1] == share - 1, obase + self.out_hw, obase)

        with m.If(self.start):
            m.d.sync += [wog.eq(0), running.eq(1), pix.eq(0), obase.eq(0)]
            first(og, og_end, self.og_n)
            first(py, py_end, self.out_h)
            first(px, px_end, self.out_w)
            restart_kernel()
            enter_window(ry0, rys0, rysw0, rx0, rxs0)
        with m.Elif(running & advance):
            with m.If(~last_chunk):
                m.d.sync += k.eq(k + 1)
                with m.If(~g_last):
                    m.d.sync += [g.eq(g + 1), goff.eq(goff + self.hw_in),
                                 g_last.eq(g + 2 + (skips & kx[0]) == self.cg_n)]
                with m.Elif(~kx_last):
                    first_group(skips & ~kx[0])
                    with m.If(solo):
                        m.d.sync += [kx.eq(kx + 2), kx_last.eq(kx + 4 >= self.k_w)]
                    with m.Else():
                        step(kx, kx_last, self.k_w)
                    m.d.sync += goff.eq(0)
                with m.Else():
                    first_group(0)
                    first_column()
                    step(ky, ky_last, self.k_h)
                    m.d.sync += [goff.eq(0), kyw.eq(kyw + self.in_w)]
            with m.Else():
                restart_kernel()
                with m.If(~cx_last):
                    m.d.sync += [cx.eq(cx + 1), cxs.eq(cxs + _s(self.s_w))]
                with m.Elif(~cy_last):
                    m.d.sync += [cx.eq(cx_lo), cxs.eq(_clip(rx, rxs, padded)), cy.eq(cy + 1),
                                 cys.eq(cys + _s(self.s_h)), rowbase.eq(rowbase + _s(s_w_in))]
                with m.Else():
                    m.d.sync += pix.eq(Mux(px_end & py_end, next_base, pix + 1))
                    enter_window(n_ry, n_rys, n_rysw, n_rx, n_rxs)
                    with m.If(~px_end):
                        step(px, px_end, self.out_w)
                    with m.Else():
                        first(px, px_end, self.out_w)
                        with m.If(~py_end):
                            step(py, py_end, self.out_h)
                        with m.Else():
                            first(py, py_end, self.out_h)
                            with m.If(og_end):
                                m.d.sync += running.eq(0)
                            with m.Else():
                                step(og, og_end, self.og_n)
                                m.d.sync += [wog.eq(wog + self.kk), obase.eq(next_base)]
        return m

    def _emit(self, m, advance, running, og, pix, iy, ix, addr, k, wog, last_chunk,
              pool_first, pool_last, merged):
        """Register the current item into ``o`` whenever the output is free (``merged``: it
        also takes the next word's lower lanes)."""
        outside_row = (iy < 0) | (iy >= _s(self.in_h))
        pad = outside_row | (ix < 0) | (ix >= _s(self.in_w))
        p = self.o.payload
        m.d.comb += self.writes.eq(self.o.valid & self.o.ready & p.last & p.tag.pool_last)
        both = pad
        if self._l.config.pairs:
            # the second pixel of a pair, or a merged item's next kernel column, reads the
            # next column (column stride 1): the word after this one, which is kept where
            # only this one pads
            pad2 = Mux(self.pair | merged, outside_row | (ix < -1) | (ix >= _s(self.in_w) - 1),
                       pad)
            both = pad & pad2
            with m.If(advance):
                m.d.sync += [p.pad2.eq(pad2), p.merge.eq(merged)]
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(running & ~self.start),
                p.act_addr.eq(Mux(both, 0, addr)), p.pad.eq(pad),
                p.w_addr.eq(self.w_base + wog + k), p.first.eq(k == 0), p.last.eq(last_chunk),
                p.tag.og.eq(og), p.tag.pix.eq(pix),
                p.tag.pool_first.eq(pool_first), p.tag.pool_last.eq(pool_last),
            ]
