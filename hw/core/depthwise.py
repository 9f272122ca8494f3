"""The depthwise datapath: the walk over a depthwise layer's input and the window that feeds
the PE array (`striate.sw.mapping.depthwise` has the mapping and the walk's contract).

`DwWalk` replaces the window generator for a depthwise layer: per channel group it walks the
input map in raster order, one item (one activation word) per cycle, and marks the items at
which an output pixel's window is complete (``last``). `DwWindow` sits between the fetch and
the PE array: a line buffer holds the last ``k - 1`` rows of words at each column, a register
window the last ``k`` columns of ``k`` rows, and each item leaves with every PE row's own
operands (``xr``): row ``t * pe_in + ch``, lane ``c`` gets channel ``ch`` of the window at row
``t``, column ``c`` (0 where that lies above or left of the map).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import Layouts
from .sequencer import base_widths

FIELDS = {  # port: its width (a `Layouts` attribute), as the window generator's
    "in_h": "rows", "in_w": "cols", "k_h": "rows", "k_w": "cols", "s_h": "stride",
    "s_w": "stride", "p_h": "pad", "p_w": "pad", "out_h": "rows", "out_w": "cols",
}


class DwWalk(wiring.Component):
    """Emits a depthwise layer's items on ``o`` after a ``start`` pulse (``done`` once the
    last is accepted, ``writes`` for each accepted item that completes an output pixel).

    Item of channel group ``og`` at walk row ``iy``, column ``ix``: weight word
    ``w_base + og``, ``first`` always, ``last`` where output ``(oy, ox)`` is complete
    (``iy = oy * s_h + k_h - 1 - p_h``, ``ix = ox * s_w + k_w - 1 - p_w``; its ``tag.pix`` the
    output's word offset ``og * out_h * out_w + oy * out_w + ox``), ``dw.rows = min(iy, k - 1)``,
    ``dw.cols = min(ix, k - 1)``, ``dw.past_row``/``dw.past_col`` where input row ``iy // up_h``
    / column ``ix // up_w`` lies past the map (the upsampling factors ``up_h``, ``up_w`` are 1
    but for an upsampling copy), and the activation word it reads, ``dw.col`` its column (its
    line buffer entry): the word at the position itself (``in_base + og * hw_in + row * in_w
    + col``, ``pad`` past the map), except that the walk reads ahead where the position lies
    past the map and the window's first row or column makes no output (`sw.mapping.depthwise`):

    * the last column of a row, past the map, reads the next row's column 0 and the walk goes
      on at column 1 (``k_w - 1 - p_w >= 1``);
    * the last row of a group, past the map, reads the next group's row 0 and the next group
      starts at row 1 (``k_h - 1 - p_h >= 1``, and at least three walk rows); its last column
      then reads that group's row 1, column 0. Beyond the last group the walk reads ``pad``.

    The sequencer has checked ``p < k`` on both axes and no pooling."""

    def __init__(self, layouts: Layouts):
        self._l = layouts
        ports = {name: In(getattr(layouts, width)) for name, width in FIELDS.items()}
        # upsampling factors (1, 1 for a depthwise convolution): the walk visits every
        # output pixel and reads input row iy // up_h, column ix // up_w
        ports.update({"up_h": In(layouts.rows), "up_w": In(layouts.cols)})
        ports.update({"cg_n": In(base_widths(layouts)["cg_n"]),
                      "hw_in": In(layouts.derived["hw_in"]),
                      "in_base": In(layouts.act_addr), "w_base": In(layouts.w_addr),
                      "start": In(1), "done": Out(1), "writes": Out(1),
                      "o": Out(stream.Signature(layouts.window))})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        lay = self._l
        k = lay.config.depthwise_kernel
        og = Signal(len(self.cg_n))
        iy, oy, row_due = Signal(lay.rows), Signal(lay.rows), Signal(lay.rows + 1)
        ix, ox, col_due = Signal(lay.cols), Signal(lay.cols), Signal(lay.cols + 1)
        rowaddr = Signal(lay.size)                            # og * hw_in + row * in_w
        next_group = Signal(lay.size)                         # (og + 1) * hw_in
        row, col = Signal(lay.rows), Signal(lay.cols)         # the input's (iy, ix // up)
        phase_y, phase_x = Signal(lay.rows), Signal(lay.cols)  # iy % up_h, ix % up_w
        pix = Signal(lay.act_addr)
        running = Signal()
        advance = ~self.o.valid | self.o.ready
        first_row, first_col = self.k_h - 1 - self.p_h, self.k_w - 1 - self.p_w
        col_out, row_out = ix == col_due, iy == row_due
        row_end = col_out & (ox == self.out_w - 1)
        last_row = row_out & (oy == self.out_h - 1)
        group_end = row_end & last_row
        emit = col_out & row_out

        # Reading ahead (the class docstring): the row's last item, past the map, reads column
        # 0 of the next row; the group's last row, past the map, the next group's row 0.
        past_row, past_col = row >= self.in_h, col >= self.in_w
        ahead_col = row_end & past_col & (self.p_w + 1 < self.k_w)
        # (a group must keep a row before its last: with two walk rows, the row that would
        # read the next group's row 0, column 0 is the one skipped)
        ahead_row = last_row & past_row & (self.p_h + 1 < self.k_h) & (iy >= 2)
        next_last = Mux(row_out, (oy + 1 == self.out_h - 1) & (self.s_h == 1),
                        (oy == self.out_h - 1) & (row_due == iy + 1))
        next_ahead = next_last & (row + 1 >= self.in_h) & (self.p_h + 1 < self.k_h) & (iy >= 1)
        more = og != self.cg_n - 1
        read_addr, read_col, read_pad = Signal(lay.size), Signal(lay.cols), Signal()
        with m.If(ahead_row & ahead_col):               # next group, row 1, column 0
            m.d.comb += [read_addr.eq(next_group + self.in_w), read_col.eq(0),
                         read_pad.eq(~more | (self.in_h < 2))]
        with m.Elif(ahead_row):                         # next group, row 0, this column
            m.d.comb += [read_addr.eq(next_group + col), read_col.eq(col),
                         read_pad.eq(~more | past_col)]
        with m.Elif(ahead_col & (last_row | next_ahead)):   # next group, row 0, column 0
            m.d.comb += [read_addr.eq(next_group), read_col.eq(0), read_pad.eq(~more)]
        with m.Elif(ahead_col):                         # next row, column 0
            m.d.comb += [read_addr.eq(rowaddr + self.in_w), read_col.eq(0),
                         read_pad.eq(row + 1 >= self.in_h)]
        with m.Else():
            m.d.comb += [read_addr.eq(rowaddr + col), read_col.eq(col),
                         read_pad.eq(past_row | past_col)]

        p = self.o.payload
        m.d.comb += [self.done.eq(~running & ~self.o.valid),
                     self.writes.eq(self.o.valid & self.o.ready & p.last)]
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(running & ~self.start),
                p.act_addr.eq(Mux(read_pad, 0, self.in_base + read_addr)), p.pad.eq(read_pad),
                p.w_addr.eq(self.w_base + og), p.first.eq(1), p.last.eq(emit),
                p.tag.og.eq(og), p.tag.pix.eq(pix), p.tag.pool_first.eq(1),
                p.tag.pool_last.eq(1),
                p.dw.col.eq(read_col), p.dw.rows.eq(Mux(iy < k - 1, iy, k - 1)),
                p.dw.cols.eq(Mux(ix < k - 1, ix, k - 1)),
                p.dw.past_row.eq(past_row), p.dw.past_col.eq(past_col),
            ]

        def new_row(skip_first):
            # a row whose column 0 was read ahead starts at column 1 (up_w is 1 then)
            m.d.sync += [ix.eq(skip_first), ox.eq(0), col_due.eq(first_col),
                         col.eq(skip_first), phase_x.eq(0)]

        def new_group(base, skip_row, skip_col):
            new_row(skip_col)
            m.d.sync += [iy.eq(skip_row), oy.eq(0), row_due.eq(first_row), row.eq(skip_row),
                         phase_y.eq(0), next_group.eq(base + self.hw_in),
                         rowaddr.eq(Mux(skip_row, base + self.in_w, base))]

        with m.If(self.start):
            new_group(0, 0, 0)
            m.d.sync += [running.eq(1), og.eq(0), pix.eq(0)]
        with m.Elif(running & advance):
            with m.If(emit):
                m.d.sync += pix.eq(pix + 1)
            with m.If(~row_end):
                m.d.sync += ix.eq(ix + 1)
                with m.If(phase_x == self.up_w - 1):
                    m.d.sync += [col.eq(col + 1), phase_x.eq(0)]
                with m.Else():
                    m.d.sync += phase_x.eq(phase_x + 1)
                with m.If(col_out):
                    m.d.sync += [ox.eq(ox + 1), col_due.eq(col_due + self.s_w)]
            with m.Elif(group_end):
                new_group(next_group, ahead_row, ahead_col)
                with m.If(~more):
                    m.d.sync += running.eq(0)
                with m.Else():
                    m.d.sync += og.eq(og + 1)
            with m.Else():
                new_row(ahead_col)
                m.d.sync += iy.eq(iy + 1)
                with m.If(phase_y == self.up_h - 1):
                    m.d.sync += [row.eq(row + 1), phase_y.eq(0),
                                 rowaddr.eq(rowaddr + self.in_w)]
                with m.Else():
                    m.d.sync += phase_y.eq(phase_y + 1)
                with m.If(row_out):
                    m.d.sync += [oy.eq(oy + 1), row_due.eq(row_due + self.s_h)]
        return m


class DwWindow(wiring.Component):
    """Turns a depthwise layer's items (one activation word each, in walk order) into PE array
    operands with a ``k x k`` window per channel: two stages (line buffer read, then the
    window and the outputs), single-enable like the rest of the datapath."""

    def __init__(self, layouts: Layouts):
        self._l = layouts
        super().__init__({"i": In(stream.Signature(layouts.operands)),
                          "o": Out(stream.Signature(layouts.operands))})

    def elaborate(self, platform):
        m = Module()
        lay = self._l
        cfg = lay.config
        k, po, pi = cfg.depthwise_kernel, cfg.pe_out, cfg.pe_in
        word = 8 * pi
        advance = ~self.o.valid | self.o.ready
        # Line buffer: entry ``col`` holds that column's last k - 1 rows (oldest first).
        lines = Memory(shape=word * (k - 1), depth=lay.lb_depth, init=[])
        m.submodules.lines = lines
        wp = lines.write_port()
        rp = lines.read_port(transparent_for=(wp,))     # a one-column walk reads what it wrote
        a = Signal.like(self.i.payload)
        a_valid = Signal()
        m.d.comb += [self.i.ready.eq(advance), rp.addr.eq(self.i.payload.dw.col),
                     rp.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [a_valid.eq(self.i.valid), a.eq(self.i.payload)]

        column = [rp.data[q * word:(q + 1) * word] for q in range(k - 1)] + [a.x.as_value()]
        # window[t][c]: row t (oldest first), column c (oldest first), a word each
        window = [[Signal(word, name=f"win{t}_{c}") for c in range(k)] for t in range(k)]
        shifted = [[window[t][c + 1] if c < k - 1 else column[t] for c in range(k)]
                   for t in range(k)]
        m.d.comb += [wp.addr.eq(a.dw.col), wp.data.eq(Cat(*column[1:])),
                     wp.en.eq(advance & a_valid)]
        o = self.o.payload
        # inside[t][c]: the window position lies inside the map: rows above and columns left of
        # it read 0, and so do the newest row and column past it (the new word was read ahead
        # for later); one enable per position, shared by every channel's lane
        inside = [[Signal(name=f"inside{t}_{c}") for c in range(k)] for t in range(k)]
        for t in range(k):
            for c in range(k):
                conds = [a.dw.rows >= k - 1 - t] * (t < k - 1) + \
                    [a.dw.cols >= k - 1 - c] * (c < k - 1) + \
                    [~a.dw.past_row] * (t == k - 1) + [~a.dw.past_col] * (c == k - 1)
                m.d.comb += inside[t][c].eq(Cat(*conds).all())
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(a_valid), o.w.eq(a.w), o.first.eq(a.first),
                         o.last.eq(a.last), o.tag.eq(a.tag)]
            with m.If(a_valid):
                m.d.sync += [window[t][c].eq(shifted[t][c]) for t in range(k) for c in range(k)]
            for t in range(po // pi):
                for ch in range(pi):
                    for c in range(pi):
                        lane = o.xr[(t * pi + ch) * pi + c]
                        if t >= k or c >= k:
                            m.d.sync += lane.eq(0)
                            continue
                        value = shifted[t][c][ch * 8:(ch + 1) * 8].as_signed()
                        m.d.sync += lane.eq(Mux(inside[t][c], value, 0))
        return m

