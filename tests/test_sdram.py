"""The ULX3S's SDRAM behind LiteDRAM (`striate.hw.platform.sdram`): the generated core and its
initialisation in hardware, against what LiteDRAM's own generator writes for its BIOS."""

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

import rtl_cases
from striate.hw.core.dma import AXI_PORTS
from striate.hw.platform import sdram
from striate.hw.platform.boards import ULX3S_SDRAM
from striate.sim.cocotb_transport import CocotbTransport
from striate.sw.config import MemoryTiming
from striate.sw.golden import timeline
from striate.sw.runtime.driver import Device
from striate.sw.runtime.program import Program

CLOCK = 25e6


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    out = tmp_path_factory.mktemp("litedram")
    verilog, registers = sdram.generate(CLOCK, out)
    return out, verilog, registers


def test_the_core_has_an_axi4_port_for_the_accelerator(core):
    _, verilog, registers = core
    assert "module litedram_core" in verilog
    for name, direction, width in AXI_PORTS:
        found = re.search(rf"(input|output) +wire +(\[(\d+):0\])? *user_port_axi_0_{name},",
                          verilog)
        assert found, name
        core_width = int(found.group(3)) + 1 if found.group(3) else 1
        # the core's side is the slave: the accelerator's outputs are its inputs
        assert found.group(1) == ("input" if direction.name == "Out" else "output"), name
        if name in ("awaddr", "araddr"):
            assert core_width == sdram.ADDR_BITS and 1 << core_width == sdram.SIZE
        elif name not in ("awsize", "arsize"):      # the core's are 4 bits, ours 3
            assert core_width == width, name
    assert ULX3S_SDRAM.sdram and ULX3S_SDRAM.config.ext_bytes == sdram.SIZE
    assert {"sdram_dfii_control", "ddrctrl_init_done"} <= set(registers)


def _bios_writes(header: str, registers: dict) -> list:
    """LiteDRAM's C ``init_sequence`` (what its BIOS runs) as (address, value, delay) writes."""
    consts = dict((name, int(value, 16)) for name, value in
                  re.findall(r"#define (DFII_\w+) (0x[0-9a-f]+)", header))
    body = header[header.index("{", header.index("static inline void init_sequence")):]
    writes = []
    for call, arg in re.findall(r"\b(\w+)\(([^;()]*)\);", body):
        value = sum(consts[c] if c in consts else int(c, 0) for c in arg.split("|")) \
            if arg else 0
        if call == "cdelay":
            writes[-1] = (*writes[-1][:2], value)
        elif call == "command_p0":
            writes += [(registers["sdram_dfii_pi0_command"], value, 0),
                       (registers["sdram_dfii_pi0_command_issue"], 1, 0)]
        elif call.endswith("_write"):
            writes.append((registers[call.removesuffix("_write")], value, 0))
    return writes


def test_the_init_sequence_is_the_one_litedram_gives_its_bios(core):
    out, _, registers = core
    header = (out / "software" / "include" / "generated" / "sdram_phy.h").read_text()
    writes = sdram.init_writes(CLOCK, registers)
    bios = _bios_writes(header, registers)
    assert len(bios) >= 20
    assert writes[:-2] == bios
    # then the controller takes the chip (SEL, CKE, ODT, RESET_N) and the core is told so
    assert writes[-2:] == [(registers["sdram_dfii_control"], 0x0F, 0),
                           (registers["ddrctrl_init_done"], 1, 0)]


def test_sdram_init_does_the_writes_and_waits_on_the_wishbone_port():
    writes = [(0x800, 0x0E, 30), (0x80C, 0x400, 0), (0x804, 0x0B, 5), (0x0, 1, 0)]
    dut = sdram.SdramInit(writes)
    seen = []

    async def slave(ctx):
        cycle = 0
        async for clk_edge, rst, cyc, stb, we, adr, dat, sel in ctx.tick().sample(
                dut.wb_cyc, dut.wb_stb, dut.wb_we, dut.wb_adr, dut.wb_dat_w, dut.wb_sel):
            cycle += 1
            if cyc and stb and not ctx.get(dut.wb_ack):
                assert we and sel == 0b1111
                seen.append((cycle, adr * 4, dat))
                ctx.set(dut.wb_ack, 1)      # acknowledged one cycle later, then released
            else:
                ctx.set(dut.wb_ack, 0)

    async def bench(ctx):
        for _ in range(200):
            if ctx.get(dut.done):
                break
            await ctx.tick()
        assert ctx.get(dut.done)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(slave, background=True)
    sim.add_testbench(bench)
    sim.run()
    assert [(a, v) for _, a, v in seen] == [(a, v) for a, v, _ in writes]
    for (t0, _, _), (t1, _, _), (_, _, wait) in zip(seen, seen[1:], writes):
        assert t1 - t0 >= wait + 2, (t0, t1, wait)


@pytest.mark.slow          # about 3 minutes: the core's build and its simulation
def test_streamed_programs_run_bit_exact_on_litedram_s_model_of_the_chip():
    """The accelerator's AXI4 port on the ULX3S's LiteDRAM core, with LiteDRAM's model of the
    chip, initialised by `SdramInit`, under cocotb on Verilator. Only the host bus reaches it,
    as on the board: the driver stages the program and the inputs through the accelerator."""
    config = ULX3S_SDRAM.config
    device = Device(CocotbTransport(config, "verilator", sdram=True), config, "ULX3S SDRAM")
    try:
        assert not device.transport.ext_backdoor
        for seed in (0, 1):
            graph, rng = rtl_cases.random_chain(seed, layers=3, max_channels=24, max_width=24)
            program = Program(graph, config, timing=MemoryTiming(10, 2), streaming="always")
            x = rtl_cases.random_inputs(rng, 2, graph.input_shape)
            got = device.run(program, x, return_all=True)
            for layer, a, b in zip(program.layers, got,
                                   program.run_reference(x, return_all=True)):
                np.testing.assert_array_equal(a, b.reshape(a.shape), err_msg=layer.name)
            # The chip moves at most 2 bytes a cycle, after at least a cycle: no run of it is
            # faster than the cycle model's with that memory, which is a lower bound.
            fastest = timeline.program_counters(program, timing=MemoryTiming(1, 2)).cycles
            planned = timeline.program_counters(program).cycles
            print(f"seed {seed}: {device.last_run.cycles} cycles on LiteDRAM's model, "
                  f"{planned} modelled at 10 cycles and 2 B/cycle, {fastest} at 1 and 2")
            assert device.last_run.cycles >= fastest
        data = np.random.default_rng(2).integers(0, 256, 3 * config.act_bytes + 5, np.uint8)
        device.write_ext(sdram.SIZE - len(data) - 3, data)
        assert np.array_equal(device.read_ext(sdram.SIZE - len(data) - 3, len(data)), data)
    finally:
        device.close()
