"""The element-wise add path: two int8 maps in, one out, one word (``pe_in`` channels) per cycle.

`AddLanes` is the arithmetic, a single-enable pipeline on streams like the datapath blocks:
``y = clamp((a * mult_a + b * mult_b + (1 << (shift - 1))) >> shift, lo, hi)`` per lane
(`striate.sw.ir.numerics.add`). `AddUnit` feeds it from the activation memory and writes its
results back: word ``i`` of the output is computed from words ``i`` of the two inputs. The
memory's two RAMs (even and odd words) deliver both input words in one cycle when the inputs
start on words of different parity; otherwise the unit reads them one after the other, two
cycles a word.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...sw.ir.numerics import ADD_MULT_BITS, ADD_SHIFT_BITS
from .layouts import Layouts
from .scale import staged_round_clamp


def add_params() -> dict:
    """The add's parameters (the descriptor's add_mult_a, add_mult_b, add_shift, act_lo and
    act_hi)."""
    return {"mult_a": In(ADD_MULT_BITS), "mult_b": In(ADD_MULT_BITS), "shift": In(ADD_SHIFT_BITS),
            "lo": In(signed(8)), "hi": In(signed(8))}


class AddLanes(wiring.Component):
    """Two pipeline stages: the lanes' sums of products, then rounded, shifted and clamped
    (in ``1 + round_stages``, `AcceleratorConfig.round_stages`); before them, as in the PE
    array, `AcceleratorConfig.mac_stages` register stages for clock speed: 1 registers the
    operands, 2 the products too."""

    def __init__(self, layouts: Layouts):
        lanes = layouts.config.pe_in
        self._stages = layouts.config.mac_stages
        self._round_stages = layouts.config.round_stages
        self._word = data.ArrayLayout(signed(8), lanes)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"a": self._word, "b": self._word}))),
            # A struct payload, as the other blocks have: with a bare array payload the pinned
            # Yosys's ABC9 fails an assertion on this module (Yosys issue 4349).
            "o": Out(stream.Signature(data.StructLayout({"y": self._word}))),
            "busy": Out(1),
            **add_params(),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self._word.length
        advance = ~self.o.valid | self.o.ready
        valid = self.i.valid
        a = [self.i.payload.a[r] for r in range(lanes)]
        b = [self.i.payload.b[r] for r in range(lanes)]
        busy = self.o.valid

        def stage(values, bits, name):
            """Registers ``values`` and the valid bit beside them under the single enable."""
            nonlocal valid, busy
            held = [Signal(signed(bits), name=f"{name}{n}", reset_less=True)
                    for n in range(len(values))]
            v = Signal(name=f"{name}_valid")
            with m.If(advance):
                m.d.sync += [v.eq(valid)] + [h.eq(x) for h, x in zip(held, values)]
            valid, busy = v, busy | v
            return held

        if self._stages >= 1:   # after the memory's read and the word select
            held = stage(a + b, 8, "add_operand")
            a, b = held[:lanes], held[lanes:]
        products = [x * self.mult_a for x in a] + [x * self.mult_b for x in b]
        if self._stages >= 2:
            products = stage(products, 8 + ADD_MULT_BITS + 1, "add_product")
        v1 = Signal()
        # int8 times an unsigned 16-bit multiplier: 25 bits; the sum of two: 26
        total = [Signal(signed(8 + ADD_MULT_BITS + 2), name=f"add_sum{r}") for r in range(lanes)]
        late = [Signal(name=f"add_round_valid{k}") for k in range(self._round_stages)]
        for v in [v1] + late:
            busy = busy | v
        m.d.comb += [self.i.ready.eq(advance), self.busy.eq(busy)]
        with m.If(advance):
            m.d.sync += [v1.eq(valid)] + [h.eq(v) for h, v in zip(late, [v1] + late)]
            m.d.sync += self.o.valid.eq(late[-1] if late else v1)
            for r in range(lanes):
                m.d.sync += [total[r].eq(products[r] + products[lanes + r]),
                             self.o.payload.y[r].eq(staged_round_clamp(
                                 m, total[r], self.shift, self.lo, self.hi, self._round_stages,
                                 f"add_round{r}"))]
        return m


class AddUnit(wiring.Component):
    """Adds the maps at words ``a_base`` and ``b_base`` into the map at ``o_base``, all of
    ``groups`` channel groups of ``pixels`` words, after a ``start`` pulse; ``done`` is high
    from the last write until the next ``start``.

    Memory ports: a read address and enable per RAM (``ram_addr[k]`` is a row of RAM ``k``, which
    holds the words ``w`` with ``w & 1 == k``), the data one cycle later, and a write port that
    takes pool word addresses. Writes are never refused, so the unit never stalls.
    """

    def __init__(self, layouts: Layouts):
        self._l = layouts
        a, lanes = layouts.act_addr, layouts.config.pe_in
        super().__init__({
            "start": In(1), "done": Out(1),
            "a_base": In(a), "b_base": In(a), "o_base": In(a),
            "pixels": In(layouts.derived["hw_in"]), "groups": In(a + 1),
            "ram_addr": Out(a - 1).array(2), "ram_en": Out(1).array(2),
            "ram_data": In(8 * lanes).array(2),
            "wr_addr": Out(a), "wr_data": Out(8 * lanes), "wr_en": Out(lanes),
            **add_params(),
        })

    def elaborate(self, platform):
        m = Module()
        lay = self._l
        m.submodules.lanes = lanes = AddLanes(lay)
        for name in add_params():
            m.d.comb += getattr(lanes, name).eq(getattr(self, name))
        running, second, valid = Signal(), Signal(), Signal()
        serial = Signal()           # both inputs in one RAM: A, then B, for each word
        a_ptr, b_ptr, o_ptr = Signal(lay.act_addr), Signal(lay.act_addr), Signal(lay.act_addr)
        pix, group = Signal.like(self.pixels), Signal.like(self.groups)
        a_odd, b_odd = Signal(), Signal()
        a_held = Signal(len(self.ram_data[0]))
        a_word = Mux(a_odd, self.ram_data[1], self.ram_data[0])
        b_word = Mux(b_odd, self.ram_data[1], self.ram_data[0])
        last = (pix + 1 == self.pixels) & (group + 1 == self.groups)

        def read(ptr):
            for k in range(2):
                with m.If(ptr[0] == k):
                    m.d.comb += [self.ram_addr[k].eq(ptr >> 1), self.ram_en[k].eq(1)]

        def next_word():
            m.d.sync += [a_ptr.eq(a_ptr + 1), b_ptr.eq(b_ptr + 1),
                         pix.eq(Mux(pix + 1 == self.pixels, 0, pix + 1))]
            with m.If(pix + 1 == self.pixels):
                m.d.sync += group.eq(group + 1)
            with m.If(last):
                m.d.sync += running.eq(0)

        m.d.sync += valid.eq(0)
        with m.If(self.start):
            m.d.sync += [running.eq(1), second.eq(0), a_ptr.eq(self.a_base), b_ptr.eq(self.b_base),
                         o_ptr.eq(self.o_base), pix.eq(0), group.eq(0),
                         serial.eq(self.a_base[0] == self.b_base[0])]
        with m.Elif(running & ~serial):
            read(a_ptr)
            read(b_ptr)
            m.d.sync += [valid.eq(1), a_odd.eq(a_ptr[0]), b_odd.eq(b_ptr[0])]
            next_word()
        with m.Elif(running & ~second):
            read(a_ptr)
            m.d.sync += [second.eq(1), a_odd.eq(a_ptr[0])]
        with m.Elif(running):
            read(b_ptr)
            m.d.sync += [second.eq(0), valid.eq(1), b_odd.eq(b_ptr[0]), a_held.eq(a_word)]
            next_word()
        m.d.comb += [lanes.i.valid.eq(valid),
                     lanes.i.payload.a.eq(Mux(serial, a_held, a_word)),
                     lanes.i.payload.b.eq(b_word),
                     lanes.o.ready.eq(1)]
        m.d.comb += [self.wr_addr.eq(o_ptr), self.wr_data.eq(lanes.o.payload.y),
                     self.wr_en.eq(Mux(lanes.o.valid, (1 << len(self.wr_en)) - 1, 0)),
                     self.done.eq(~running & ~valid & ~lanes.busy)]
        with m.If(lanes.o.valid):
            m.d.sync += o_ptr.eq(o_ptr + 1)
        return m
