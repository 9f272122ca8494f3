"""Requantization and pooling behind the PE array (the numerics contract in hardware).

Both are single-enable pipelines like `pe`: every stage advances when the output is free.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...sw.mapping.memmap import PARAM_ENTRY_WORDS
from ...sw.ir.numerics import MULT_BITS, SHIFT_BITS
from .layouts import ACC, Layouts, depthwise_flag, depthwise_port
from .scale import BIASED, PRODUCT, SerialScale, split_product, staged_round_clamp

# One parameter entry (`striate.sw.mapping.layout`): four 32-bit words, of which the multiplier and
# shift words use their low `numerics.MULT_BITS` and `numerics.SHIFT_BITS`.
ENTRY = data.StructLayout({"bias": signed(32),
                           "mult": unsigned(MULT_BITS), "mult_pad": 32 - MULT_BITS,
                           "shift": unsigned(SHIFT_BITS), "shift_pad": 32 - SHIFT_BITS,
                           "unused": 32})
assert ENTRY.size == 32 * PARAM_ENTRY_WORDS

# pooling mode and average scale (the descriptor's pool_mult and pool_shift)
POOL_PORTS = {"mode": In(2), "mult": In(MULT_BITS), "shift": In(SHIFT_BITS)}


def requant_ports(layouts: Layouts) -> dict:
    """Ports of a requantizer: sums in, pixels out, its parameter memory read port."""
    return {
        "i": In(stream.Signature(layouts.sums)),
        "o": Out(stream.Signature(layouts.pixels)),
        "p_base": In(layouts.p_addr), "lo": In(signed(8)), "hi": In(signed(8)),
        "p_addr": Out(layouts.p_addr), "p_en": Out(1),
        "p_data": In(32 * PARAM_ENTRY_WORDS * layouts.config.requant_parallel),
    }


def averaging(layouts: Layouts, mode):
    """Whether pooling ``mode`` averages: never in a configuration without ``avg_pool``,
    whose pooling logic then reduces to max pooling."""
    return mode == 2 if layouts.config.avg_pool else Const(0, 1)


def lane_groups(layouts: Layouts, og, dw):
    """The requantizer lane groups (of ``requant_parallel`` lanes) an item of channel group
    ``og`` needs: ``(first, count)``. All ``pe_out / requant_parallel`` of them, but for a
    depthwise pixel (``dw``) only those holding its ``pe_in`` channels, lanes from
    ``(og % (pe_out / pe_in)) * pe_in`` on (`striate.hw.core.pe.MacArray`)."""
    cfg = layouts.config
    po, lanes, pi = cfg.pe_out, cfg.requant_parallel, cfg.pe_in
    steps = po // lanes
    if not cfg.depthwise_kernel:
        return Const(0, 1), Const(steps, range(steps + 1))
    first_lane = og[:(po // pi).bit_length() - 1] << pi.bit_length() - 1
    return (Mux(dw, first_lane >> lanes.bit_length() - 1, 0),
            Mux(dw, max(1, pi // lanes), steps))


def param_group(layouts: Layouts, og, dw):
    """The parameter row group of an item of channel group ``og``: ``og``, but for a
    depthwise pixel (``dw``) the output channel group its ``pe_in`` channels belong to,
    ``og / (pe_out / pe_in)``."""
    cfg = layouts.config
    if not cfg.depthwise_kernel:
        return og
    return Mux(dw, og >> (cfg.pe_out // cfg.pe_in).bit_length() - 1, og)


def pool_merge(acc, y, first, average):
    """Each lane's running max or (``average``) sum with pixel ``y``; ``y`` itself when
    ``first``. A running max is an int8, so only its low byte is compared."""
    return [Mux(first, y[r], Mux(average, acc[r] + y[r],
                                 Mux(y[r] > acc[r][:8].as_signed(), y[r], acc[r])))
            for r in range(len(acc))]


class Requant(wiring.Component):
    """``y = clamp(round_shift((acc + bias) * mult, shift), lo, hi)`` per output channel.

    ``requant_parallel`` (R) channels per cycle: each item is split into ``pe_out / R`` lane
    groups that flow through four stages (parameter read, bias add, multiply, shift and clamp;
    the multiply in two with ``split_products``, the last in ``1 + round_stages``) and are
    assembled into the output pixel. Group ``j`` of channel group ``og`` reads parameter memory
    row ``p_base + og * pe_out / R + j`` (`striate.sw.mapping.layout.pack_params`). With R < pe_out an
    accepted item waits in a holding register, so items arriving at least ``pe_out / R``
    cycles apart never stall the PE array.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        ports = requant_ports(layouts)
        ports.update(depthwise_port(layouts.config))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self._l.config
        po, lanes = cfg.pe_out, cfg.requant_parallel
        steps = po // lanes
        advance = ~self.o.valid | self.o.ready
        params = data.ArrayLayout(ENTRY, lanes)(self.p_data)
        jr = Signal(range(max(2, steps)))      # lane groups done of this item
        j = Signal(range(max(2, steps)))       # the lane group being read
        # Stage registers (valid, tag, lane group, last group) after the parameter read (1),
        # the bias add (x), the multiply (2; with `split_products` its partial products, then
        # their sum, p) and the rounding shift's `round_stages` (r0, r1); the shift and clamp
        # feed the output register.
        names = ("1", "x", "2") + ("p",) * cfg.split_products + \
            tuple(f"r{k}" for k in range(cfg.round_stages))
        # (only the valid bits are reset, as in the PE array)
        stages = {name: (Signal(name=f"v{name}"),
                         Signal(self._l.tag, name=f"tag{name}", reset_less=True),
                         Signal.like(j, name=f"j{name}", reset_less=True),
                         Signal(name=f"last{name}", reset_less=True))
                  for name in names}
        acc1 = [Signal(ACC, name=f"acc1_{r}", reset_less=True) for r in range(lanes)]
        x = [Signal(BIASED, name=f"x{r}", reset_less=True) for r in range(lanes)]
        mult_x = [Signal(MULT_BITS, name=f"mult{r}", reset_less=True) for r in range(lanes)]
        shift_x = [Signal(SHIFT_BITS, name=f"shiftx{r}", reset_less=True) for r in range(lanes)]
        prod = [Signal(PRODUCT, name=f"prod{r}", reset_less=True) for r in range(lanes)]
        shift2 = [Signal(SHIFT_BITS, name=f"shift{r}", reset_less=True) for r in range(lanes)]
        if steps == 1:          # one lane group: straight from the input
            valid0, tag0, acc_bits = self.i.valid, self.i.payload.tag, self.i.payload.acc.as_value()
        else:                   # several: work from a holding register
            held = Signal.like(self.i.payload, reset_less=True)
            valid0, tag0, acc_bits = Signal(), held.tag, held.acc.as_value()
        first_j, count = lane_groups(self._l, tag0.og, depthwise_flag(self))
        group = param_group(self._l, tag0.og, depthwise_flag(self))
        last = jr == count - 1
        m.d.comb += j.eq(first_j + jr)
        if steps == 1:
            m.d.comb += self.i.ready.eq(advance)
        else:
            m.d.comb += self.i.ready.eq(advance & (~valid0 | last))
            with m.If(self.i.ready):
                m.d.sync += [valid0.eq(self.i.valid), held.eq(self.i.payload)]
        m.d.comb += [self.p_en.eq(advance),
                     self.p_addr.eq(self.p_base + (group << steps.bit_length() - 1) + j)]
        vn, tagn, jn, lastn = stages[names[-1]]      # the values the output register takes
        with m.If(advance):
            previous = (valid0, tag0, j, last)
            for stage in stages.values():
                m.d.sync += [reg.eq(value) for reg, value in zip(stage, previous)]
                previous = stage
            m.d.sync += [self.o.valid.eq(vn & lastn), self.o.payload.tag.eq(tagn)]
            with m.If(valid0):
                m.d.sync += jr.eq(Mux(last, 0, jr + 1))
            for r in range(lanes):
                p = params[r]
                # one lane group: a constant select (a variable one costs every lane a shifter)
                word = acc_bits.word_select(r, 32) if steps == 1 else \
                    acc_bits.word_select(j * lanes + r, 32)
                m.d.sync += [acc1[r].eq(word.as_signed()),
                             x[r].eq(acc1[r] + p.bias), mult_x[r].eq(p.mult),
                             shift_x[r].eq(p.shift),
                             shift2[r].eq(shift_x[r])]
                shift = shift2[r]
                if cfg.split_products:
                    m.d.sync += prod[r].eq(split_product(m, x[r], mult_x[r], f"part{r}"))
                    shift = Signal.like(shift2[r], name=f"shiftp{r}", reset_less=True)
                    m.d.sync += shift.eq(shift2[r])
                else:
                    m.d.sync += prod[r].eq(x[r] * mult_x[r])
                y = staged_round_clamp(m, prod[r], shift, self.lo, self.hi,
                                       cfg.round_stages, f"round{r}")
                for group in range(steps):
                    with m.If(vn & (jn == group)):
                        m.d.sync += self.o.payload.y[group * lanes + r].eq(y)
        return m


class Pool(wiring.Component):
    """Max or average pooling over the items between ``pool_first`` and ``pool_last``.

    ``mode`` 0 passes items through (each is its own window), 1 keeps the maximum, 2 sums and
    requantizes the sum with ``mult`` / ``shift`` (``1 / (kh * kw)`` folded in), clamped to
    ``[lo, hi]``. Three stages: merge, multiply (two with ``split_products``), shift and clamp
    (in ``1 + round_stages``); a maximum's pixel is kept beside them. ``mult``, ``shift``, ``lo``
    and ``hi`` are registered on the way in, so they must be set a cycle before the first
    pixel arrives and held while a layer's pixels pass (the descriptor's fields are).

    An average is scaled on ``requant_parallel`` multipliers, one lane group a cycle, the groups
    `lane_groups` names (as `Requant`, which takes as many cycles per item, so in the
    accelerator the next window never waits); its result leaves ``count - 1`` cycles after a
    maximum's would. A window that ends while the last one is still being scaled waits.

    With pixel pairs (``pair``, `AcceleratorConfig.pairs`) a maximum's window is two columns
    wide, one in each half of the lanes: lane ``r`` of the lower half leaves with the larger of
    itself and lane ``r + pe_out / 2``.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        ports = {
            "i": In(stream.Signature(layouts.pixels)),
            "o": Out(stream.Signature(layouts.pixels)),
            "lo": In(signed(8)), "hi": In(signed(8)), **POOL_PORTS,
        }
        ports.update(depthwise_port(layouts.config))
        if layouts.config.pairs:
            ports["pair"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self._l.config
        po, lanes = cfg.pe_out, cfg.requant_parallel
        steps = po // lanes
        advance = ~self.o.valid | self.o.ready
        # (only the valid bits are reset, as in the PE array)
        acc = [Signal(self._l.pool_sum, name=f"pacc{r}", reset_less=True) for r in range(po)]
        out1 = Signal(data.ArrayLayout(self._l.pool_sum, po), reset_less=True)  # the result
        out2 = [Signal(signed(8), name=f"pmax{r}", reset_less=True) for r in range(po)]
        prod = [Signal(PRODUCT, name=f"pprod{r}", reset_less=True)           # sum * mult
                for r in range(lanes)]
        v1, v2, last2 = Signal(), Signal(), Signal(reset_less=True)
        tag1, tag2 = Signal(self._l.tag, reset_less=True), Signal(self._l.tag, reset_less=True)
        # the lane group being scaled (the j1-th of count1, group sel1: kept as a count of its
        # own so that no adder sits before the group select and the multipliers) and the one
        # in prod
        j1, sel1, count1 = (Signal(range(steps + 1), name=n) for n in ("j1", "sel1", "count1"))
        j2 = Signal(range(max(2, steps)), reset_less=True)
        p = self.i.payload
        average = averaging(self._l, self.mode)
        # The descriptor's scale and bounds, copied beside the multipliers and the shifters: a
        # layer's pixels reach them cycles after its descriptor does, and the paths from the
        # sequencer's register into the rounding shift were the design's longest.
        mult, shift = Signal.like(self.mult), Signal.like(self.shift)
        lo, hi = Signal.like(self.lo), Signal.like(self.hi)
        m.d.sync += [mult.eq(self.mult), shift.eq(self.shift), lo.eq(self.lo), hi.eq(self.hi)]
        done1 = ~v1 | (j1 == count1 - 1)        # out1 is free after this cycle
        m.d.comb += self.i.ready.eq(advance & done1)
        first, count = lane_groups(self._l, p.tag.og, depthwise_flag(self))
        with m.If(advance):
            m.d.sync += [v2.eq(v1), tag2.eq(tag1)]
            with m.If(done1):
                m.d.sync += [v1.eq(self.i.valid & p.tag.pool_last), tag1.eq(p.tag), j1.eq(0),
                             sel1.eq(first), count1.eq(Mux(average, count, 1))]
            with m.Else():
                m.d.sync += [j1.eq(j1 + 1), sel1.eq(sel1 + 1)]
            m.d.sync += [last2.eq(done1), j2.eq(sel1)]
            merged = Signal.like(out1)
            m.d.comb += [merged[r].eq(v) for r, v in
                         enumerate(pool_merge(acc, p.y, p.tag.pool_first, average))]
            for r in range(po):
                with m.If(self.i.valid & self.i.ready):
                    m.d.sync += acc[r].eq(merged[r])
                    with m.If(p.tag.pool_last):
                        m.d.sync += out1[r].eq(merged[r])
                folded = out1[r]
                if cfg.pairs and r < po // 2:     # a pair's two columns of a max window
                    upper = out1[r + po // 2]
                    folded = Mux(self.pair & (self.mode == 1) & (upper > out1[r]), upper,
                                 out1[r])
                m.d.sync += out2[r].eq(folded)
            if steps == 1:
                scaled = out1
            else:
                # out1's lane group sel1, selected a cycle ahead into a register of its own so
                # that the multipliers take a register (the select was the longest path): the
                # window's first group as the window arrives, then each next one
                group = lanes * self._l.pool_sum.width
                scaled = Signal(data.ArrayLayout(self._l.pool_sum, lanes), reset_less=True)
                with m.If(done1):
                    m.d.sync += scaled.eq(merged.as_value().word_select(first, group))
                with m.Else():
                    m.d.sync += scaled.eq(out1.as_value().word_select(sel1 + 1, group))
            for r in range(lanes):
                m.d.sync += prod[r].eq(split_product(m, scaled[r], mult, f"ppart{r}")
                                       if cfg.split_products else scaled[r] * mult)
            avg = [staged_round_clamp(m, prod[r], shift, lo, hi, cfg.round_stages,
                                      f"pround{r}") for r in range(lanes)]
            late = (v2, tag2, last2, j2, out2)      # beside the product's sum and rounding
            for k in range(cfg.split_products + cfg.round_stages):
                held = (Signal(name=f"pv_r{k}"),
                        Signal(self._l.tag, name=f"ptag_r{k}", reset_less=True),
                        Signal(name=f"plast_r{k}", reset_less=True),
                        Signal.like(j2, name=f"pj_r{k}", reset_less=True),
                        [Signal(signed(8), name=f"pmax_r{k}_{r}", reset_less=True)
                         for r in range(po)])
                m.d.sync += [h.eq(v) for h, v in zip(held[:4] + tuple(held[4]),
                                                     late[:4] + tuple(late[4]))]
                late = held
            vn, tagn, lastn, jn, outn = late
            m.d.sync += [self.o.valid.eq(vn & lastn), self.o.payload.tag.eq(tagn)]
            for r in range(po):
                with m.If(vn & (~average | (jn == r // lanes))):
                    m.d.sync += self.o.payload.y[r].eq(Mux(average, avg[r % lanes], outn[r]))
        return m


class SerialPost(wiring.Component):
    """`Requant` followed by `Pool` for ``serial_scale_bits`` configurations: one item at a
    time, on `SerialScale` units (``requant_parallel`` of them, the first also scaling average
    pools one channel after another). Same ports and results as the two blocks in a row.

    Per item: for each lane group read its parameter row, then requantize its channels; merge
    the pixel into the pooling window; at the window's last pixel (average pooling: after
    scaling every channel's sum) hand the pixel to the output register.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        ports = {**requant_ports(layouts), **POOL_PORTS}
        ports.update(depthwise_port(layouts.config))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self._l.config
        po, lanes = cfg.pe_out, cfg.requant_parallel
        steps = po // lanes
        params = data.ArrayLayout(ENTRY, lanes)(self.p_data)
        held = Signal.like(self.i.payload)
        ys = Signal(data.ArrayLayout(signed(8), po))        # the requantized pixel
        out = Signal(data.ArrayLayout(signed(8), po))       # the pooled pixel
        pacc = [Signal(self._l.pool_sum, name=f"pacc{r}") for r in range(po)]
        j = Signal(range(max(2, steps)))
        c = Signal(range(max(2, po)))
        pooling = Signal()                                  # unit 0 scales pool sums
        units = []
        for r in range(lanes):
            unit = SerialScale(cfg.serial_scale_bits)
            m.submodules[f"scale{r}"] = unit
            units.append(unit)
            m.d.comb += [unit.x.eq(held.acc[j * lanes + r] + params[r].bias),
                         unit.mult.eq(params[r].mult), unit.shift.eq(params[r].shift),
                         unit.lo.eq(self.lo), unit.hi.eq(self.hi)]
        with m.If(pooling):
            m.d.comb += [units[0].x.eq(Array(pacc)[c]), units[0].mult.eq(self.mult),
                         units[0].shift.eq(self.shift)]
        # (a depthwise pixel: every lane group is scaled; the writer takes the pixel's)
        group = param_group(self._l, held.tag.og, depthwise_flag(self))
        m.d.comb += self.p_addr.eq(self.p_base + (group << steps.bit_length() - 1) + j)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [held.eq(self.i.payload), j.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += self.p_en.eq(1)
                m.next = "START"
            with m.State("START"):
                m.d.comb += [unit.start.eq(1) for unit in units]
                m.next = "SCALE"
            with m.State("SCALE"):
                with m.If(units[0].done):
                    for group in range(steps):
                        with m.If(j == group):
                            m.d.sync += [ys[group * lanes + r].eq(unit.y)
                                         for r, unit in enumerate(units)]
                    m.d.sync += j.eq(j + 1)
                    m.next = "MERGE" if steps == 1 else "NEXT"
            if steps > 1:
                with m.State("NEXT"):
                    m.next = "READ"
                    with m.If(j == 0):
                        m.next = "MERGE"
            with m.State("MERGE"):
                average = averaging(self._l, self.mode)
                merged = pool_merge(pacc, ys, held.tag.pool_first, average)
                m.d.sync += [a.eq(v) for a, v in zip(pacc, merged)]
                m.d.sync += [out[r].eq(v[:8]) for r, v in enumerate(merged)]
                m.d.sync += c.eq(0)
                m.next = "IDLE"
                with m.If(held.tag.pool_last):
                    m.next = "EMIT"
                    with m.If(average):
                        m.d.sync += pooling.eq(1)
                        m.next = "PSTART"
            with m.State("PSTART"):
                m.d.comb += units[0].start.eq(1)
                m.next = "PSCALE"
            with m.State("PSCALE"):
                with m.If(units[0].done):
                    for r in range(po):
                        with m.If(c == r):
                            m.d.sync += out[r].eq(units[0].y)
                    m.d.sync += c.eq(c + 1)
                    m.next = "PSTART"
                    with m.If(c == po - 1):
                        m.d.sync += pooling.eq(0)
                        m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(~self.o.valid | self.o.ready):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.y.eq(out),
                                 self.o.payload.tag.eq(held.tag)]
                    m.next = "IDLE"
        return m
