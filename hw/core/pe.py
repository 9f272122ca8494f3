"""Operand fetch and the PE array.

Both are single-enable pipelines: every register advances when the output is free
(``~o.valid | o.ready``), so backpressure freezes them in place; synchronous memory read ports
share that enable and therefore hold their data while frozen.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib.memory import Memory
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import ACC, Layouts, depthwise_port
from .skid import Skid


class Fetch(wiring.Component):
    """Turns window addresses into operands: reads one activation word and one weight word per
    item; padding positions read as zero. With pixel pairs (`AcceleratorConfig.pairs`) it
    also takes ``act_data2``, the word after ``act_addr`` (in the activation memory's other
    RAM, read in the same cycle), as ``x2``, zero where ``pad2``; an item with ``merge``
    (`LayerDescriptor.merge`) gives the lower half of ``x2``'s lanes as the upper half of
    ``x``'s."""

    def __init__(self, layouts: Layouts):
        self._l = layouts
        cfg = layouts.config
        ports = {
            "i": In(stream.Signature(layouts.window)),
            "o": Out(stream.Signature(layouts.operands)),
            "act_addr": Out(layouts.act_addr), "act_en": Out(1), "act_data": In(8 * cfg.pe_in),
            "w_addr": Out(layouts.w_addr), "w_en": Out(1),
            "w_data": In(8 * cfg.pe_out * cfg.pe_in),
        }
        if cfg.pairs:
            ports["act_data2"] = In(8 * cfg.pe_in)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        pad = Signal()
        first, last = Signal(), Signal()
        tag = Signal(self._l.tag)
        controls = self._l.config.depthwise_kernel    # the depthwise window's, passed on
        dw = Signal(self._l.dw) if controls else None
        x = Mux(pad, 0, self.act_data)
        if self._l.config.pairs:
            pad2, merge = Signal(), Signal()
            x2 = Mux(pad2, 0, self.act_data2)
            m.d.comb += self.o.payload.x2.eq(x2)
            with m.If(advance):
                m.d.sync += [pad2.eq(self.i.payload.pad2), merge.eq(self.i.payload.merge)]
            # a merged item: the upper half of the lanes takes the next word's lower half
            half = 4 * self._l.config.pe_in
            x = Mux(merge, Cat(x[:half], x2[:half]), x)
        m.d.comb += [
            self.i.ready.eq(advance),
            self.act_addr.eq(self.i.payload.act_addr), self.act_en.eq(advance),
            self.w_addr.eq(self.i.payload.w_addr), self.w_en.eq(advance),
            self.o.payload.x.eq(x),
            self.o.payload.w.eq(self.w_data),
            self.o.payload.first.eq(first), self.o.payload.last.eq(last),
            self.o.payload.tag.eq(tag),
        ]
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(self.i.valid), pad.eq(self.i.payload.pad),
                         first.eq(self.i.payload.first), last.eq(self.i.payload.last),
                         tag.eq(self.i.payload.tag)]
        if controls:
            m.d.comb += self.o.payload.dw.eq(dw)
            with m.If(advance):
                m.d.sync += dw.eq(self.i.payload.dw)
        return m


class _Stage:
    """A pipeline register of the PE array: valid bit and (reset-less) controls, taken from
    ``item`` (a stream or another stage) under ``m.If(advance)``."""

    def __init__(self, m, layouts, item):
        self.valid = Signal()
        self.payload = Signal(data.StructLayout({"first": 1, "last": 1, "tag": layouts.tag}),
                              reset_less=True)
        m.d.sync += [self.valid.eq(item.valid)] + [
            getattr(self.payload, name).eq(getattr(item.payload, name))
            for name in ("first", "last", "tag")]


class MacArray(wiring.Component):
    """``pe_out x pe_in`` int8 multipliers with one int32 accumulator per row.

    Each accepted item adds ``sum_i w[o * pe_in + i] * x[i]`` to accumulator ``o`` (replacing it
    when ``first``); the item with ``last`` emits the finished accumulators. ``busy`` is high in
    every cycle the array does a chunk of work.

    ``products(m, pairs)``, if given, makes the products ``[a * b for a, b in pairs]`` (signed
    int8 operands) on the part's own blocks, combinationally, such as
    `striate.hw.platform.ice40dsp.ice40_products`; by default they are inferred.
    """

    def __init__(self, layouts: Layouts, products=None):
        self._l = layouts
        self._products = products
        ports = {
            "i": In(stream.Signature(layouts.operands)),
            "o": Out(stream.Signature(layouts.sums)),
            "busy": Out(1),
        }
        ports.update(depthwise_port(layouts.config))
        if layouts.config.pairs:
            ports["pair"] = In(1)
        if layouts.config.psum_entries:
            ports.update({"start": In(1), "psum_in": In(1), "psum_out": In(1),
                          "psum_written": Out(1)})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        po, pi = self._l.config.pe_out, self._l.config.pe_in
        dw = self._l.config.depthwise_kernel
        stages = self._l.config.mac_stages
        out = self.o
        if stages:      # the stall of what takes the sums reaches the array a cycle later
            m.submodules.skid = skid = Skid(self._l.sums)
            m.d.comb += [self.o.valid.eq(skid.o.valid), self.o.payload.eq(skid.o.payload),
                         skid.o.ready.eq(self.o.ready)]
            out = skid.i
        advance = ~out.valid | out.ready
        m.d.comb += [self.i.ready.eq(advance)]
        # The item as the multipliers see it: each row's operands (a depthwise layer gives
        # each row operands of its own; with pixel pairs the upper half of the rows takes the
        # second pixel's) and weights, from the input or with `mac_stages` registered (after
        # the memories' read, the padding select and the depthwise select).
        pairs = self._l.config.pairs

        def operand(payload, r, c):
            x = payload.x[c]
            if pairs and r >= po // 2:
                x = Mux(self.pair, payload.x2[c], x)
            return Mux(self.dw, payload.xr[r * pi + c], x) if dw else x
        item = self.i
        operands = [[operand(self.i.payload, r, c) for c in range(pi)] for r in range(po)]
        weights = [self.i.payload.w[n] for n in range(po * pi)]
        if stages >= 1:
            # one register per distinct operand: per row (depthwise), per half (pairs) or one
            source = (lambda r: r) if dw else (lambda r: int(r >= po // 2)) if pairs else \
                (lambda r: 0)
            first_row = {}
            for r in range(po):
                first_row.setdefault(source(r), r)
            held = {s: [Signal(signed(8), name=f"x{s}_{c}", reset_less=True)
                        for c in range(pi)] for s in first_row}
            held_w = [Signal(signed(8), name=f"w{n}", reset_less=True) for n in range(po * pi)]
            with m.If(advance):
                item = _Stage(m, self._l, self.i)
                m.d.sync += [h.eq(v) for h, v in zip(held_w, weights)]
                m.d.sync += [held[s][c].eq(operands[r][c]) for s, r in first_row.items()
                             for c in range(pi)]
            operands, weights = [held[source(r)] for r in range(po)], held_w
        pairs = [(operands[r][c], weights[r * pi + c]) for r in range(po) for c in range(pi)]
        products = self._products(m, pairs) if self._products else [a * b for a, b in pairs]
        if stages >= 2:         # the products registered before the adder trees
            held = [Signal(signed(16), name=f"product{n}", reset_less=True)
                    for n in range(len(products))]
            with m.If(advance):
                item = _Stage(m, self._l, item)
                m.d.sync += [h.eq(p) for h, p in zip(held, products)]
            products = held
        # Only valid bits are reset (the reset reaches fewer registers: on the ECP5 its
        # fan-out was the longest path)
        a_valid = Signal()
        a_first, a_last = Signal(reset_less=True), Signal(reset_less=True)
        a_tag = Signal(self._l.tag, reset_less=True)
        psum = [Signal(ACC, name=f"psum{r}", reset_less=True) for r in range(po)]
        # The accumulators are the output: the array stalls while its output waits, so they
        # hold the finished sums until they are taken.
        acc = [out.payload.acc[r] for r in range(po)]
        m.d.comb += self.busy.eq(advance & a_valid)
        if dw:  # a depthwise pixel: channel ch's sum is its rows' (t * pe_in + ch) together,
            # in every row group, so the lanes of whichever group the pixel's channels take
            # downstream hold it
            channel = [sum(psum[t * pi + ch] for t in range(po // pi)) for ch in range(pi)]
            adds = [Mux(self.dw, channel[r % pi], psum[r]) for r in range(po)]
        else:
            adds = psum
        if self._l.config.psum_entries:     # sums start from the partial-sum memory's
            entering = advance & item.valid & item.payload.first
            starts, emit = self._partial_sums(m, advance, entering, a_valid, a_last), \
                ~self.psum_out
            totals = [Mux(a_first, starts[r], acc[r]) + adds[r] for r in range(po)]
            m.d.comb += self._psum_data.eq(Cat(*[t[:32] for t in totals]))
        else:
            emit = 1
            totals = [Mux(a_first, adds[r], acc[r] + adds[r]) for r in range(po)]
        with m.If(advance):
            m.d.sync += [a_valid.eq(item.valid), a_first.eq(item.payload.first),
                         a_last.eq(item.payload.last), a_tag.eq(item.payload.tag)]
            for r in range(po):
                m.d.sync += psum[r].eq(sum(products[r * pi:(r + 1) * pi]))
            with m.If(a_valid):
                m.d.sync += [out.valid.eq(a_last & emit), out.payload.tag.eq(a_tag)]
                m.d.sync += [acc[r].eq(totals[r]) for r in range(po)]
            with m.Else():
                m.d.sync += out.valid.eq(0)
        return m

    def _partial_sums(self, m, advance, entering, a_valid, a_last):
        """The partial-sum memory (`LayerDescriptor.psum_in` and ``psum_out``): entry ``n``
        belongs to the ``n``-th conv pixel the layer emits. A pixel's first item reads its
        entry as it enters the sums' stage (``entering``; the read port advances with the
        pipeline, so the entry is there when the item adds up); with ``psum_in`` the pixel's
        sums start from it instead of zero. With ``psum_out`` its finished sums
        (``self._psum_data``) are written back to the entry instead of leaving. Returns each
        row's starting value."""
        po = self._l.config.pe_out
        depth = self._l.config.psum_entries
        mem = m.submodules.psum = Memory(shape=32 * po, depth=depth, init=[])
        rp, wp = mem.read_port(), mem.write_port()
        read_n, write_n = Signal(range(depth)), Signal(range(depth))
        finishing = advance & a_valid & a_last & self.psum_out
        self._psum_data = wp.data
        m.d.comb += [rp.addr.eq(read_n), rp.en.eq(advance), wp.addr.eq(write_n),
                     wp.en.eq(finishing), self.psum_written.eq(finishing)]
        with m.If(self.start):
            m.d.sync += [read_n.eq(0), write_n.eq(0)]
        with m.Else():
            with m.If(entering):
                m.d.sync += read_n.eq(read_n + 1)
            with m.If(finishing):
                m.d.sync += write_n.eq(write_n + 1)
        return [Mux(self.psum_in, rp.data[32 * r:32 * (r + 1)].as_signed(), 0)
                for r in range(po)]
