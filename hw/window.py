"""The window generator: walks a layer's loop nest and emits one item of work per cycle.

Loop order (outermost first): output channel group ``og``, pooled output pixel ``(py, px)``, the
conv pixels ``(cy, cx)`` of its pooling window that lie inside the conv map, kernel offsets
``(ky, kx)``, input channel group ``g``. Each item names the activation word at input pixel
``(cy*s - p + ky, cx*s - p + kx)`` of group ``g`` (``pad`` when that lies outside the map, which
reads as zero) and the weight word ``[og][ky][kx][g]``. The whole map sits in the activation
bank, so windows are read from it directly, one word per cycle, instead of through line buffers
that would duplicate rows the bank already holds.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import Layouts

GEOMETRY = {  # port: width, all unsigned; set by the sequencer, stable while a layer runs
    "cg_n": 16, "in_h": 10, "in_w": 10, "hw_in": 20, "k_h": 10, "k_w": 10, "s_h": 3, "s_w": 3,
    "p_h": 3, "p_w": 3, "conv_h": 10, "conv_w": 10, "pk_h": 10, "pk_w": 10, "ps_h": 10,
    "ps_w": 10, "pp_h": 3, "pp_w": 3, "out_h": 10, "out_w": 10, "og_n": 16, "kk": 26,
}


def _s(value):
    """Zero-extend an unsigned value by one bit and treat it as signed."""
    return Cat(value, Const(0, 1)).as_signed()


def _max(a, b):
    return Mux(a > b, a, b)


def _min(a, b):
    return Mux(a < b, a, b)


def _shift_add(value, factor):
    """``value * factor`` as a sum of shifted copies of ``value``, one per bit of ``factor``:
    plain adders, so synthesis spends no multiplier block on these per-layer constants."""
    terms = [Mux(factor[i], value << i, 0) for i in range(len(factor))]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class WindowGen(wiring.Component):
    """Emits the layer's work items on ``o`` after a ``start`` pulse; ``done`` rises once the
    last item has been accepted. ``writes`` pulses for each accepted item that completes an
    output pixel (``last`` and ``pool_last``)."""

    def __init__(self, layouts: Layouts):
        self._l = layouts
        ports = {name: In(width) for name, width in GEOMETRY.items()}
        ports.update({
            "in_base": In(layouts.act_addr), "w_base": In(layouts.w_addr),
            "start": In(1), "done": Out(1), "writes": Out(1),
            "o": Out(stream.Signature(layouts.window)),
        })
        super().__init__(ports)

    def _bounds(self, m, start, kernel, limit, name):
        """First and last conv row (or column) of the pooling window starting at ``start``."""
        lo, hi = Signal(signed(24), name=f"{name}_lo"), Signal(signed(24), name=f"{name}_hi")
        m.d.comb += [lo.eq(_max(start, 0)), hi.eq(_min(_s(limit), start + _s(kernel)) - 1)]
        return lo, hi

    def elaborate(self, platform):
        m = Module()
        og, py, px = Signal(16), Signal(10), Signal(10)
        cy, cx = Signal(signed(24)), Signal(signed(24))
        ky, kx, g = Signal(10), Signal(10), Signal(16)
        k, wog = Signal(26), Signal(self._l.w_addr)
        running = Signal()
        advance = ~self.o.valid | self.o.ready
        # Running products, so the walk needs no multipliers: ry/rx = window start
        # (py * ps - pp), rys/rxs = start * s, rysw = start * s * in_w, cys/cxs = cy/cx * s,
        # rowbase = (cy * s - p) * in_w, kyw = ky * in_w, goff = g * hw_in.
        wide = signed(26)          # window and address terms stay inside a bank (< 2**24)
        ry, rx, rys, rxs, rysw = (Signal(wide, name=n) for n in ("ry", "rx", "rys", "rxs", "rysw"))
        cys, cxs, rowbase = (Signal(wide, name=n) for n in ("cys", "cxs", "rowbase"))
        kyw, goff = Signal(20), Signal(25)
        s_w_in = _shift_add(self.in_w, self.s_h)                 # s_h * in_w
        step_y = _shift_add(self.ps_h, self.s_h)                 # ps_h * s_h
        step_x = _shift_add(self.ps_w, self.s_w)
        step_yw = _shift_add(s_w_in, self.ps_h)                  # ps_h * s_h * in_w
        ry0, rx0 = -_s(self.pp_h), -_s(self.pp_w)
        rys0, rxs0 = -_s(_shift_add(self.pp_h, self.s_h)), -_s(_shift_add(self.pp_w, self.s_w))
        rysw0 = -_s(_shift_add(s_w_in, self.pp_h))
        p_row = _s(_shift_add(self.in_w, self.p_h))              # p_h * in_w

        cy_lo, cy_hi = self._bounds(m, ry, self.pk_h, self.conv_h, "cy")
        cx_lo, cx_hi = self._bounds(m, rx, self.pk_w, self.conv_w, "cx")
        last_chunk = (g == self.cg_n - 1) & (kx == self.k_w - 1) & (ky == self.k_h - 1)
        pool_last = (cy == cy_hi) & (cx == cx_hi)
        iy = cys + _s(ky) - _s(self.p_h)
        ix = cxs + _s(kx) - _s(self.p_w)
        addr = self.in_base + goff + (rowbase + _s(kyw) + ix).as_unsigned()
        self._emit(m, advance, running, og, py, px, iy, ix, addr, k, wog, last_chunk,
                   (cy == cy_lo) & (cx == cx_lo), pool_last)

        # Next pooled pixel and its window.
        px_end, py_end, og_end = px == self.out_w - 1, py == self.out_h - 1, og == self.og_n - 1
        n_ry, n_rx, n_rys, n_rxs, n_rysw = (Signal(wide, name=n) for n in
                                            ("n_ry", "n_rx", "n_rys", "n_rxs", "n_rysw"))
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
                         cy.eq(_max(y, 0)), cx.eq(_max(x, 0)),
                         cys.eq(Mux(y < 0, 0, ys)), cxs.eq(Mux(x < 0, 0, xs)),
                         rowbase.eq(Mux(y < 0, 0, ysw) - p_row)]

        def restart_kernel():
            m.d.sync += [k.eq(0), g.eq(0), kx.eq(0), ky.eq(0), kyw.eq(0), goff.eq(0)]

        with m.If(self.start):
            m.d.sync += [og.eq(0), py.eq(0), px.eq(0), wog.eq(0), running.eq(1)]
            restart_kernel()
            enter_window(ry0, rys0, rysw0, rx0, rxs0)
        with m.Elif(running & advance):
            with m.If(~last_chunk):
                m.d.sync += k.eq(k + 1)
                with m.If(g != self.cg_n - 1):
                    m.d.sync += [g.eq(g + 1), goff.eq(goff + self.hw_in)]
                with m.Elif(kx != self.k_w - 1):
                    m.d.sync += [g.eq(0), goff.eq(0), kx.eq(kx + 1)]
                with m.Else():
                    m.d.sync += [g.eq(0), goff.eq(0), kx.eq(0), ky.eq(ky + 1),
                                 kyw.eq(kyw + self.in_w)]
            with m.Else():
                restart_kernel()
                with m.If(cx != cx_hi):
                    m.d.sync += [cx.eq(cx + 1), cxs.eq(cxs + _s(self.s_w))]
                with m.Elif(cy != cy_hi):
                    m.d.sync += [cx.eq(cx_lo), cxs.eq(Mux(rx < 0, 0, rxs)), cy.eq(cy + 1),
                                 cys.eq(cys + _s(self.s_h)), rowbase.eq(rowbase + _s(s_w_in))]
                with m.Else():
                    m.d.sync += [px.eq(Mux(px_end, 0, px + 1)),
                                 py.eq(Mux(px_end, Mux(py_end, 0, py + 1), py))]
                    enter_window(n_ry, n_rys, n_rysw, n_rx, n_rxs)
                    with m.If(px_end & py_end):
                        with m.If(og_end):
                            m.d.sync += running.eq(0)
                        with m.Else():
                            m.d.sync += [og.eq(og + 1), wog.eq(wog + self.kk)]
        return m

    def _emit(self, m, advance, running, og, py, px, iy, ix, addr, k, wog, last_chunk,
              pool_first, pool_last):
        """Register the current item into ``o`` whenever the output is free."""
        pad = (iy < 0) | (iy >= _s(self.in_h)) | (ix < 0) | (ix >= _s(self.in_w))
        p = self.o.payload
        m.d.comb += self.writes.eq(self.o.valid & self.o.ready & p.last & p.tag.pool_last)
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(running & ~self.start),
                p.act_addr.eq(Mux(pad, 0, addr)), p.pad.eq(pad),
                p.w_addr.eq(self.w_base + wog + k), p.first.eq(k == 0), p.last.eq(last_chunk),
                p.tag.og.eq(og), p.tag.py.eq(py), p.tag.px.eq(px),
                p.tag.pool_first.eq(pool_first), p.tag.pool_last.eq(pool_last),
            ]
