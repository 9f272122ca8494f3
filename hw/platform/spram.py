"""Weight memory in the iCE40 UltraPlus single-port RAMs (SB_SPRAM256KA, 16K x 16 bits each).

Yosys only maps a memory to SPRAM when it has no initial contents, which Amaranth memories
always have, so board tops instantiate the blocks directly. The host writes every weight before
a run, so the blocks' undefined power-up contents are never read.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

DEPTH, WIDTH = 16384, 16


class Ice40Spram(wiring.Component):
    """``width`` bits x ``depth`` rows (``depth <= 16384``, ``width`` a multiple of 32) as
    ``width / 16`` side-by-side blocks. One address for reads and writes; ``w_en`` has one bit
    per 32-bit word of a row; ``r_data`` is registered and holds while ``r_en`` is low, like an
    Amaranth memory read port with an enable (a write leaves it undefined)."""

    def __init__(self, width: int, depth: int):
        if width % 32 or not 0 < depth <= DEPTH:
            raise ValueError(f"SPRAM memory must be a multiple of 32 bits wide and at most "
                             f"{DEPTH} deep, not {width} x {depth}")
        self.width, self.depth = width, depth
        super().__init__({"addr": In(max(1, (depth - 1).bit_length())), "r_en": In(1),
                          "w_en": In(width // 32), "w_data": In(width), "r_data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        write = self.w_en.any()
        for i in range(self.width // WIDTH):
            granule = self.w_en[i // 2]
            m.submodules[f"spram{i}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=self.addr.as_unsigned()[:14] if len(self.addr) >= 14
                else Cat(self.addr, Const(0, 14 - len(self.addr))),
                i_DATAIN=self.w_data[WIDTH * i:WIDTH * (i + 1)],
                i_MASKWREN=Cat(granule, granule, granule, granule),
                i_WREN=write, i_CHIPSELECT=write | self.r_en, i_CLOCK=ClockSignal(),
                i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=self.r_data[WIDTH * i:WIDTH * (i + 1)])
        return m
