"""A skid buffer: a stream's ``ready`` registered, its data passed on in the same cycle.

Between two single-enable pipelines (`striate.hw.core.pe`) it ends the combinational chain of
``ready`` from the consumer's stall back into every register of the producer: the producer
sees the buffer's registered ``ready`` instead. While the consumer takes every item the
buffer is empty and adds no cycle; when it stalls, the buffer keeps the one item the
producer gave in that cycle, and passes it on before the producer's next.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class Skid(wiring.Component):
    """``o`` carries what ``i`` gives, in order; ``i.ready`` is a register."""

    def __init__(self, layout):
        self._layout = layout
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        held = Signal()
        kept = Signal(self._layout, reset_less=True)
        m.d.comb += [self.i.ready.eq(~held), self.o.valid.eq(held | self.i.valid),
                     self.o.payload.eq(Mux(held, kept.as_value(), self.i.payload.as_value()))]
        # While empty the buffer copies every cycle's payload, so that its wide enable is the
        # register ``held`` and the consumer's ``ready`` drives only ``held``.
        with m.If(~held):
            m.d.sync += kept.eq(self.i.payload)
        with m.If(~held & self.i.valid & ~self.o.ready):
            m.d.sync += held.eq(1)
        with m.Elif(held & self.o.ready):
            m.d.sync += held.eq(0)
        return m
