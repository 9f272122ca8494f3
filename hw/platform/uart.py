"""8N1 UART receiver and transmitter; ``divisor`` is clock cycles per bit."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class UartRx(wiring.Component):
    """Samples ``rx`` in the middle of each bit; a byte whose stop bit is not 1 is dropped. A
    byte arriving while ``o`` is still full is dropped too (the bridge checks frames by CRC)."""

    def __init__(self, divisor: int):
        assert divisor >= 2
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.d.sync += rx.eq(self.rx)                      # one synchronizer stage
        count = Signal(range(self.divisor * 3 // 2 + 1))
        bit = Signal(range(10))
        shift = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += [count.eq(self.divisor * 3 // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):                       # first sample 1.5 bits after the edge
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += count.eq(self.divisor - 1)
                    with m.If(bit == 8):
                        with m.If(rx & (~self.o.valid | self.o.ready)):
                            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [shift.eq(Cat(shift[1:], rx)), bit.eq(bit + 1)]
        return m


class UartTx(wiring.Component):
    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        frame = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        count = Signal(range(self.divisor))
        m.d.comb += [self.tx.eq(frame[0]), self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & (bits == 0)):
            m.d.sync += [frame.eq(Cat(0, self.i.payload, 1)), bits.eq(10),
                         count.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            m.d.sync += count.eq(count - 1)
            with m.If(count == 0):
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits.eq(bits - 1),
                             count.eq(self.divisor - 1)]
        return m
