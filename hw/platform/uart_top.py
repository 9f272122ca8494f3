"""The accelerator behind a UART: what a board top instantiates (minus clock and pins)."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect

from ...sw.runtime import framing
from ...sw.config import AcceleratorConfig
from .bridge import Bridge
from ..core.dma import AXI_PORTS, axi_ports
from ..core.top import Accelerator
from .uart import UartRx, UartTx


class UartAccelerator(wiring.Component):
    """`Accelerator` reached through `Bridge` over an 8N1 UART of ``divisor`` clocks per bit.
    The bridge drops a partial frame after `framing.FRAME_TIMEOUT_BITS` bit times of silence.
    ``weight_ram`` and ``products`` are the part's blocks, as `Accelerator` takes them.
    With external memory (``config.ext_bytes``), the accelerator's AXI4 port (``axi_*``) is
    passed through."""

    def __init__(self, config: AcceleratorConfig, divisor: int, weight_ram=None, products=None):
        self.config, self.divisor = config, divisor
        self.weight_ram, self.products = weight_ram, products
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                          **(axi_ports() if config.ext_bytes else {})})

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = Accelerator(self.config, self.weight_ram, self.products)
        m.submodules.rx = rx = UartRx(self.divisor)
        m.submodules.tx = tx = UartTx(self.divisor)
        m.submodules.bridge = bridge = Bridge(timeout=framing.FRAME_TIMEOUT_BITS * self.divisor)
        connect(m, rx.o, bridge.i)
        connect(m, bridge.o, tx.i)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), self.busy.eq(acc.busy),
                     bridge.r_data.eq(acc.r_data), bridge.r_valid.eq(acc.r_valid)]
        # The bus requests are registered: the bridge's decoding stays out of the
        # accelerator's paths (the bridge waits for ``r_valid``, so reads just take a cycle
        # longer).
        m.d.sync += [acc.addr.eq(bridge.addr), acc.w_en.eq(bridge.w_en),
                     acc.w_data.eq(bridge.w_data), acc.r_en.eq(bridge.r_en)]
        if self.config.ext_bytes:
            for name, direction, _ in AXI_PORTS:
                outer, inner = getattr(self, "axi_" + name), getattr(acc, "axi_" + name)
                m.d.comb += outer.eq(inner) if direction is Out else inner.eq(outer)
        return m
