"""The ULX3S's 32 MB SDRAM behind LiteDRAM, on the accelerator's AXI4 port.

LiteDRAM's own generator (``python -m litedram.gen``, from the pinned ``litedram`` package)
writes the memory controller as Verilog: its generic SDR PHY (``GENSDRPHY``, on the ECP5's I/O
registers), the controller with its refresh, and a 64-bit AXI4 user port converted to the
chip's 16 bits. Without a CPU, such a core waits for someone to initialise the chip through its
Wishbone control port (LiteX's BIOS does it in software); `SdramInit` replays LiteDRAM's own
init sequence (`litedram.init`) there in hardware, then hands the chip to the controller and
sets ``init_done``. Until then the core holds its AXI port not ready, so the accelerator's
transfers simply wait.

The chip is clocked half a cycle after the controller (an inverted copy of the clock from an
output DDR register): commands and write data launched on a rising edge are sampled by the
chip half a period later, and read data come back before the next rising edge at the ULX3S's
25 MHz.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.hdl import (Array, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal,
                          Signal)
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from ..core.dma import AXI_PORTS

CORE = "litedram_core"
#: LiteDRAM's model of the ULX3S's chip (IS42S16160: 4 banks x 8,192 rows x 512 columns x 16
#: bits, the same geometry and timing).
MODULE = "MT48LC16M16"
SIZE = 32 << 20
ADDR_BITS = 25
DQ_BITS = 16
CONTROL = {"SEL": 0x01, "CKE": 0x02, "ODT": 0x04, "RESET_N": 0x08}
COMMAND = {"CS": 0x01, "WE": 0x02, "CAS": 0x04, "RAS": 0x08}


class SdramError(RuntimeError):
    """LiteDRAM's generator failed (`bitstream.build` reports it as a `BuildError`)."""


def core_config(clock_hz: float) -> dict:
    """The generator's configuration (its YAML; JSON is YAML): no CPU, one AXI4 port."""
    return {"device": "LFE5U-85F-6BG381C", "cpu": "None", "memtype": "SDR",
            "sdram_module": MODULE, "sdram_module_nb": DQ_BITS // 8, "sdram_phy": "GENSDRPHY",
            "sys_clk_freq": float(clock_hz), "cmd_buffer_depth": 16,
            "user_ports": {"axi_0": {"type": "axi", "id_width": 1, "data_width": 64}}}


def generate(clock_hz: float, out_dir: Path, simulate: bool = False) -> tuple[str, dict]:
    """Run LiteDRAM's generator into ``out_dir``; return the core's Verilog and its control
    registers' byte addresses by name. With ``simulate``, the core has LiteDRAM's model of the
    chip (``SDRAMPHYModel``, the memory inside) in place of the PHY and its pins."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / "litedram.yml"
    config.write_text(json.dumps(core_config(clock_hz), indent=2) + "\n")
    result = subprocess.run([sys.executable, "-m", "litedram.gen", str(config),
                             "--no-compile-software", "--name", CORE,
                             "--output-dir", str(out_dir)] + ["--sim"] * simulate,
                            capture_output=True, text=True, cwd=out_dir)
    verilog = out_dir / "gateware" / f"{CORE}.v"
    if result.returncode or not verilog.exists():
        log = (result.stdout + result.stderr)[-3000:]
        raise SdramError(f"LiteDRAM's generator failed:\n{log}")
    with open(out_dir / "csr.csv") as f:
        registers = {row[1]: int(row[2], 16) for row in csv.reader(f)
                     if row and row[0] == "csr_register"}
    return verilog.read_text(), registers


def init_writes(clock_hz: float, registers: dict) -> list[tuple[int, int, int]]:
    """LiteDRAM's init sequence for the chip as control-port writes: (byte address, value,
    cycles to wait after), ending with the chip handed to the controller and ``init_done``."""
    from litedram.init import get_sdram_phy_init_sequence
    from litedram.modules import MT48LC16M16
    from litedram.phy.gensdrphy import GENSDRPHY
    from migen import Record
    pads = Record([("a", 13), ("ba", 2), ("cs_n", 1), ("cke", 1), ("ras_n", 1), ("cas_n", 1),
                   ("we_n", 1), ("dq", DQ_BITS), ("dm", DQ_BITS // 8)])
    phy = GENSDRPHY(pads, clock_hz)
    sequence, _ = get_sdram_phy_init_sequence(
        phy.settings, MT48LC16M16(clock_hz, "1:1").timing_settings)
    reg = {name: registers[f"sdram_dfii_{name}"] for name in
           ("control", "pi0_command", "pi0_command_issue", "pi0_address", "pi0_baddress")}
    writes = []
    for _, address, bank, command, delay in sequence:
        names = command.split("|")
        writes += [(reg["pi0_address"], address, 0), (reg["pi0_baddress"], bank, 0)]
        if names[0].startswith("DFII_CONTROL_"):
            writes.append((reg["control"], _bits(names, "DFII_CONTROL_", CONTROL), delay))
        else:
            writes += [(reg["pi0_command"], _bits(names, "DFII_COMMAND_", COMMAND), 0),
                       (reg["pi0_command_issue"], 1, delay)]
    hardware = CONTROL["SEL"] | CONTROL["CKE"] | CONTROL["ODT"] | CONTROL["RESET_N"]
    writes += [(reg["control"], hardware, 0), (registers["ddrctrl_init_done"], 1, 0)]
    return writes


def _bits(names: list, prefix: str, values: dict) -> int:
    out = 0
    for name in names:
        out |= values[name.removeprefix(prefix)]
    return out


class SdramInit(Elaboratable):
    """Does ``writes`` (`init_writes`) on a Wishbone classic master, waiting after each as
    told, then raises ``done``. Ports ``wb_*`` as the core's control port names them."""

    def __init__(self, writes: list[tuple[int, int, int]]):
        self.writes = writes
        self.wb_adr, self.wb_dat_w = Signal(30), Signal(32)
        self.wb_cyc, self.wb_stb, self.wb_we = Signal(), Signal(), Signal()
        self.wb_sel, self.wb_ack = Signal(4), Signal()
        self.done = Signal()

    def elaborate(self, platform):
        m = Module()
        n = len(self.writes)
        longest = max(wait for _, _, wait in self.writes)
        addr = Array(Const(a >> 2, 30) for a, _, _ in self.writes)
        value = Array(Const(v, 32) for _, v, _ in self.writes)
        wait = Array(Const(w, range(longest + 1)) for _, _, w in self.writes)
        index = Signal(range(n + 1))
        count = Signal(range(longest + 1))
        m.d.comb += [self.wb_adr.eq(addr[index]), self.wb_dat_w.eq(value[index]),
                     self.wb_sel.eq(0b1111), self.wb_we.eq(1)]
        with m.FSM():
            with m.State("WRITE"):
                m.d.comb += [self.wb_cyc.eq(1), self.wb_stb.eq(1)]
                with m.If(self.wb_ack):
                    m.d.sync += count.eq(wait[index])
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == n - 1):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "WRITE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
        return m


class LiteDram(Elaboratable):
    """The LiteDRAM core on the ULX3S's SDRAM pins, with `SdramInit` on its control port.
    ``axi`` maps each AXI signal name (``awaddr``, ...) to the accelerator-side signal (the
    accelerator is a separate Verilog module in a board build); the core's Verilog goes into
    the build as ``litedram_core.v``."""

    def __init__(self, clock_hz: float, axi: dict):
        self.clock_hz, self.axi = clock_hz, axi
        self.init_done = Signal()

    def elaborate(self, platform):
        m = Module()
        with tempfile.TemporaryDirectory(prefix="striate-litedram-") as tmp:
            verilog, registers = generate(self.clock_hz, Path(tmp))
        platform.add_file(f"{CORE}.v", verilog)
        m.submodules.init = init = SdramInit(init_writes(self.clock_hz, registers))
        # Raw pins: the core has its own I/O registers and buffers (and drives the active-low
        # ones low itself).
        pins = platform.request("sdram", 0, dir={name: "-" for name in (
            "clk", "clk_en", "cs", "we", "ras", "cas", "dqm", "ba", "a", "dq")})
        # The chip's clock: the controller's, inverted, from an output DDR register.
        m.submodules.sdram_clk = Instance("ODDRX1F", i_SCLK=ClockSignal(), i_RST=0,
                                          i_D0=0, i_D1=1, o_Q=pins.clk.io)
        ports = {"i_rst": ResetSignal(),
                 "o_sdram_a": pins.a.io, "o_sdram_ba": pins.ba.io, "o_sdram_cas_n": pins.cas.io,
                 "o_sdram_cke": pins.clk_en.io, "o_sdram_cs_n": pins.cs.io,
                 "o_sdram_dm": pins.dqm.io, "io_sdram_dq": pins.dq.io,
                 "o_sdram_ras_n": pins.ras.io, "o_sdram_we_n": pins.we.io}
        m.submodules.core = core_instance(init, self.axi, self.init_done, ports)
        return m


def core_instance(init: SdramInit, axi: dict, init_done, ports: dict) -> Instance:
    """The core (module `CORE`) with ``init`` on its control port and ``axi`` (AXI signal name
    -> the accelerator's signal) on its AXI4 port, plus ``ports`` (its pins or, simulated,
    none)."""
    ports = {"i_clk": ClockSignal(), "o_init_done": init_done, "o_init_error": Signal(),
             "o_user_clk": Signal(), "o_user_rst": Signal(), **ports}
    for name in ("adr", "dat_w", "cyc", "stb", "we", "sel"):
        ports[f"i_wb_ctrl_{name}"] = getattr(init, f"wb_{name}")
    ports.update(i_wb_ctrl_bte=0, i_wb_ctrl_cti=0, o_wb_ctrl_ack=init.wb_ack,
                 o_wb_ctrl_dat_r=Signal(32), o_wb_ctrl_err=Signal())
    for name, direction, _ in AXI_PORTS:
        signal = axi[name]
        if name in ("awaddr", "araddr"):
            signal = signal[:ADDR_BITS]
        # the core is the slave: the accelerator's outputs are its inputs
        ports[("i_" if direction is Out else "o_") + f"user_port_axi_0_{name}"] = signal
    return Instance(CORE, **ports)


class SdramAccelerator(wiring.Component):
    """For simulation: `Accelerator` (host bus ports as its own) with its AXI4 port on the
    core generated with LiteDRAM's model of the chip (``generate(..., simulate=True)``, whose
    Verilog goes beside this design's), initialised by `SdramInit` as on the board."""

    def __init__(self, config, clock_hz: float, registers: dict):
        from ..core.top import Accelerator
        self.clock_hz, self.registers = clock_hz, registers
        self._acc = Accelerator(config)
        super().__init__({name: member for name, member in self._acc.signature.members.items()
                          if not name.startswith("axi_")})

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = self._acc
        for name, member in self.signature.members.items():
            outer, inner = getattr(self, name), getattr(acc, name)
            m.d.comb += outer.eq(inner) if member.flow is Out else inner.eq(outer)
        m.submodules.init = init = SdramInit(init_writes(self.clock_hz, self.registers))
        axi = {name: getattr(acc, "axi_" + name) for name, _, _ in AXI_PORTS}
        m.submodules.core = core_instance(init, axi, Signal(), {"i_sim_trace": 0})
        return m
