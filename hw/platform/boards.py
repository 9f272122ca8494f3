"""Board tops: a PLL-derived clock, `UartAccelerator` on the board's USB UART, an LED for busy,
and on the ULX3S its SDRAM behind LiteDRAM (`striate.hw.platform.sdram`) as external memory.

`BOARDS` names each supported board with its accelerator configuration (sized to the part) and
clock. `striate.hw.platform.bitstream` builds them with the YoWASP tools.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from amaranth.hdl import (ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal,
                          Signal)
from amaranth.lib.cdc import ResetSynchronizer

from amaranth.lib.wiring import Out

from ...sw.config import AcceleratorConfig
from ..core.dma import AXI_PORTS
from . import sdram
from .ice40dsp import ice40_products
from .logicmul import logic_products
from .spram import Ice40Spram
from .uart_top import UartAccelerator

BAUD = 115200
ACCEL = "striate_accel"      # the accelerator's Verilog module in a board build


@dataclass(frozen=True)
class Board:
    """One supported board: its Amaranth platform, accelerator and clock."""

    name: str
    platform: str                  # class name in amaranth_boards.<module>
    module: str
    config: AcceleratorConfig
    clock_mhz: float
    family: str                    # "ice40" or "ecp5"
    sdram: bool = False            # its SDRAM behind LiteDRAM is the external memory
    logic_products: int = 0        # the PE array's last products in logic (`logic_products`)

    def make_platform(self):
        import importlib
        return getattr(importlib.import_module(f"amaranth_boards.{self.module}"), self.platform)()


def ice40_pll(f_in: float, f_out: float) -> dict:
    """SB_PLL40 divider settings (simple feedback) closest to ``f_out`` MHz from ``f_in`` MHz:
    ``f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``, with the phase detector at 10-133 MHz and
    the VCO at 533-1066 MHz (iCE40 sysCLOCK PLL limits)."""
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if best is None or abs(out - f_out) < abs(best[0] - f_out):
                    best = (out, divr, divf, divq, pfd)
    out, divr, divf, divq, pfd = best
    filter_range = next(i for i, top in enumerate((17, 26, 44, 66, 101, 133)) if pfd < top) + 1
    return {"f_out": out, "DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range}


def ecp5_pll(f_in: float, f_out: float) -> dict:
    """EHXPLLL settings closest to ``f_out`` MHz: ``f_in * CLKFB_DIV / CLKI_DIV``, the VCO
    (``f_out * CLKOP_DIV``) at 400-800 MHz and the phase detector at >= 3.125 MHz (ECP5 sysCLOCK
    PLL limits)."""
    best = None
    for clki in range(1, 129):
        if f_in / clki < 3.125:
            break
        for clkfb in range(1, 81):
            out = f_in * clkfb / clki
            for clkop in range(1, 129):
                if 400 <= out * clkop <= 800:
                    if best is None or abs(out - f_out) < abs(best[0] - f_out):
                        best = (out, clki, clkfb, clkop)
                    break
    out, clki, clkfb, clkop = best
    return {"f_out": out, "CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop}


class BoardTop(Elaboratable):
    """The design a board's bitstream holds."""

    def __init__(self, board: Board, baud: int = BAUD):
        self.board, self.baud = board, baud

    def _clock(self, m, platform):
        """The ``sync`` domain from the PLL, held in reset until the PLL locks."""
        board = self.board
        m.domains.sync = ClockDomain("sync")
        locked, clk = Signal(), Signal()     # clk: the PLL output, named for the constraint
        m.d.comb += ClockSignal("sync").eq(clk)
        if board.family == "ice40":     # the clock pin feeds the PLL directly (its PAD input)
            clk_pin = platform.request(platform.default_clk, dir="-")
            pll = ice40_pll(platform.default_clk_frequency / 1e6, board.clock_mhz)
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=pll["DIVR"], p_DIVF=pll["DIVF"],
                p_DIVQ=pll["DIVQ"], p_FILTER_RANGE=pll["FILTER_RANGE"],
                i_PACKAGEPIN=clk_pin.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        else:
            clk_in = platform.request(platform.default_clk, dir="i").i
            pll = ecp5_pll(platform.default_clk_frequency / 1e6, board.clock_mhz)
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=pll["CLKI_DIV"], p_CLKFB_DIV=pll["CLKFB_DIV"],
                p_CLKOP_DIV=pll["CLKOP_DIV"], p_CLKOP_CPHASE=pll["CLKOP_DIV"] - 1,
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                a_FREQUENCY_PIN_CLKI=str(platform.default_clk_frequency / 1e6),
                a_FREQUENCY_PIN_CLKOP=str(pll["f_out"]),
                i_CLKI=clk_in, i_CLKFB=clk, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0,
                i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=clk, o_LOCK=locked)
        m.submodules.reset = ResetSynchronizer(~locked, domain="sync")
        platform.add_clock_constraint(clk, pll["f_out"] * 1e6)
        return pll["f_out"]

    def elaborate(self, platform):
        from amaranth.back import verilog
        m = Module()
        clock_mhz = self._clock(m, platform)
        divisor = round(clock_mhz * 1e6 / self.baud)
        accel = UartAccelerator(self.board.config, divisor, **part_blocks(self.board))
        # Yosys reads the accelerator as Verilog: this Yosys build's logic mapping (ABC9)
        # fails an internal assertion on Amaranth's RTLIL of the requantizer (ECP5).
        platform.add_file(f"{ACCEL}.v", verilog.convert(accel, name=ACCEL, emit_src=False))
        uart = platform.request("uart", 0)
        led = platform.request("led", 0)
        ports = {}
        if self.board.sdram:
            axi = {name: Signal(width, name=f"axi_{name}") for name, _, width in AXI_PORTS}
            ports = {("o_" if direction is Out else "i_") + "axi_" + name: axi[name]
                     for name, direction, _ in AXI_PORTS}
            m.submodules.sdram = sdram.LiteDram(clock_mhz * 1e6, axi)
        m.submodules.accel = Instance(ACCEL, i_clk=ClockSignal("sync"),
                                      i_rst=ResetSignal("sync"), i_rx=uart.rx.i,
                                      o_tx=uart.tx.o, o_busy=led.o, **ports)
        return m


def part_blocks(board: Board) -> dict:
    """The `Accelerator` arguments that put its memories and multipliers on ``board``'s part:
    on the iCE40, the weights in SPRAM and two products per SB_MAC16; on the ECP5, the
    products beyond its MULT18X18D in logic where ``board.logic_products`` says so."""
    if board.family == "ice40":
        return {"weight_ram": Ice40Spram, "products": ice40_products}
    return {"products": logic_products(board.logic_products)} if board.logic_products else {}


# iCE40 UP5K (5,280 LUTs, 8 SB_MAC16, 30 SB_RAM40_4K, 4 SB_SPRAM256KA): 8 MACs on 4 of the 8
# DSPs (two products per block), shift-add requantization, weights in the SPRAMs (16K x 64
# bits), activations in block RAM;
# maps up to 32 x 32 and no average pooling, pool padding, activation tables or overlapped
# layer set-up, so that it fits (docs/fpga.md).
ICEBREAKER = Board(
    name="icebreaker", platform="ICEBreakerPlatform", module="icebreaker", family="ice40",
    clock_mhz=24.0,
    config=AcceleratorConfig(pe_out=2, pe_in=4, requant_lanes=1, serial_scale_bits=2,
                             max_width=32, max_height=32, max_kernel=5, max_stride=2,
                             act_bytes=4096, weight_bytes=128 * 1024, param_entries=128,
                             program_depth=8, avg_pool=False, pool_padding=False,
                             residual_add=False, activation_tables=0, ext_bytes=0,
                             act_banks=1, overlap_setup=False))

# ECP5-85F (84K LUTs, 156 MULT18X18D, 208 DP16KD): a 32 x 4 array, 128 MACs. 64 products
# on MULT18X18D and the last 64 in logic (`logic_products`): the requantizer's, average pool's
# and add unit's multipliers take 41 blocks, and with 112 products on blocks (153 of 156) the
# router still had 12,107 wires overused after 12 iterations (26 minutes; stopped). Four
# requantizer lanes, memories sized so that the MLPerf Tiny ResNet-8 and DS-CNN run on chip
# (64 KiB of activations, 128 KiB of weights). The clock, 25 MHz x 8 / 5 from the PLL, is
# what the design meets (docs/fpga.md), the overlapped layer set-up included.
ULX3S = Board(
    name="ulx3s", platform="ULX3S_85F_Platform", module="ulx3s", family="ecp5",
    clock_mhz=40.0, logic_products=64,
    config=AcceleratorConfig(pe_out=32, requant_lanes=4, max_width=64, max_height=64,
                             act_bytes=65536, weight_bytes=128 * 1024, param_entries=1024,
                             program_depth=16, ext_bytes=0, act_banks=1, mac_stages=2,
                             round_stages=2, split_products=True))

# The ULX3S with its 32 MB SDRAM behind LiteDRAM as external memory (networks larger than the
# chip stream from it), the default 16 x 4 array (64 MACs, all on MULT18X18D), two activation
# banks (the fewest that let transfers overlap layers).
# It meets 25 MHz since average pooling scales four lanes a cycle, which left the MULT18X18D
# blocks two-thirds used instead of all but three (docs/memory.md, "The ULX3S's SDRAM"); it
# stays at the board's oscillator clock, the one the SDRAM controller's timing is set up and
# simulated at.
# Its 256-entry partial-sum memory (15 more DP16KD) runs layers beyond half its 128 KiB weight
# memory (ResNet-18's 256- and 512-channel 3 x 3 convolutions) in chunks of input channels.
# Without the overlapped layer set-up: before the register stages its router had not
# converged with it after 270 iterations (33 minutes); not tried since. Without pixel pairs:
# with them (about 700 LUTs more, 42.19 MHz on the `ulx3s` build) its router diverged (1,706
# wires overused after 45 iterations, 33 minutes).
ULX3S_SDRAM = replace(
    ULX3S, name="ulx3s-sdram", sdram=True, clock_mhz=25.0, logic_products=0,
    config=replace(ULX3S.config, pe_out=16, ext_bytes=sdram.SIZE, act_banks=2, psum_entries=256,
                   overlap_setup=False, pixel_pairs=False, round_stages=0,
                   split_products=False))

BOARDS = {board.name: board for board in (ICEBREAKER, ULX3S, ULX3S_SDRAM)}
