"""Board tops: clock settings, report parsing, the iCE40 SB_MAC16's two products and the
ULX3S's products in logic against Verilog's multiplication, the iCEBreaker's SPRAM and DSP
blocks running the whole LeNet in simulation, and (slow tier) every board's bitstream; CI
builds the iCEBreaker's and the ULX3S-with-SDRAM's with `make bitstream` (`.ci/run`)."""

import json
import subprocess
from dataclasses import replace

import numpy as np
import pytest

import striate
from striate.hw.platform import bitstream
from striate.hw.platform.boards import BOARDS, ICEBREAKER, ULX3S, ecp5_pll, ice40_pll
from striate.hw.platform.ice40dsp import ice40_products
from striate.hw.platform.logicmul import logic_products
from striate.sim.build import ice40_models
from striate.sw.fuzz import open_model
from striate.sw.golden import timeline
from striate.sw.golden.cycles import may_stall, program_cycles
from striate.sw.mapping import memmap
from striate.sw.mapping.descriptor import POOL_AVG, POOL_MAX


@pytest.mark.parametrize("target", [24.0, 30.0, 48.0])
def test_ice40_pll_settings_meet_the_pll_limits(target):
    pll = ice40_pll(12.0, target)
    pfd = 12.0 / (pll["DIVR"] + 1)
    vco = pfd * (pll["DIVF"] + 1)
    assert 10 <= pfd <= 133 and 533 <= vco <= 1066
    assert vco / 2 ** pll["DIVQ"] == pytest.approx(pll["f_out"]) == pytest.approx(target)


@pytest.mark.parametrize("target", [20.0, 75.0])
def test_ecp5_pll_settings_meet_the_pll_limits(target):
    pll = ecp5_pll(25.0, target)
    out = 25.0 * pll["CLKFB_DIV"] / pll["CLKI_DIV"]
    assert out == pytest.approx(pll["f_out"]) == pytest.approx(target)
    assert 400 <= out * pll["CLKOP_DIV"] <= 800 and 25.0 / pll["CLKI_DIV"] >= 3.125


PRODUCTS_TB = """
module tb;
  reg signed [7:0] a0, b0, a1, b1, a2, b2;
  wire signed [15:0] p0, p1, p2;
  reg clk = 0;
  integer i, checked = 0, wrong = 0;
  products dut(CLOCK.a0(a0), .b0(b0), .a1(a1), .b1(b1), .a2(a2), .b2(b2),
               .p0(p0), .p1(p1), .p2(p2));
  initial begin
    for (i = 0; i < 65536; i = i + 1) begin
      {a0, b0} = i; {a1, b1} = i * 40503; {a2, b2} = 65535 - i;
      #1;
      if (p0 !== a0 * b0 || p1 !== a1 * b1 || p2 !== a2 * b2) wrong = wrong + 1;
      checked = checked + 1;
    end
    $display("checked %0d wrong %0d", checked, wrong);
    $finish;
  end
endmodule
"""


@pytest.mark.parametrize("part", ["ice40", "logic"])
def test_part_products_equal_signed_multiplication_for_every_operand_pair(tmp_path, part):
    """The PE array's products as a board's part makes them equal Verilog's signed
    multiplication for all 65,536 int8 operand pairs, each of three products: `ice40_products`
    on Yosys' model of the SB_MAC16 (two blocks, the second half used), and `logic_products`
    (the ULX3S's products beyond its MULT18X18D; the first inferred, the last two in logic)."""
    from amaranth.back import verilog
    from amaranth.hdl import Module, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Products(wiring.Component):
        def __init__(self):
            super().__init__({**{f"{v}{n}": In(signed(8)) for v in "ab" for n in range(3)},
                              **{f"p{n}": Out(signed(16)) for n in range(3)}})

        def elaborate(self, platform):
            m = Module()
            pairs = [(getattr(self, f"a{n}"), getattr(self, f"b{n}")) for n in range(3)]
            products = ice40_products if part == "ice40" else logic_products(2)
            m.d.comb += [getattr(self, f"p{n}").eq(p) for n, p in enumerate(products(m, pairs))]
            return m
    source = tmp_path / "products.v"
    source.write_text(verilog.convert(Products(), name="products", emit_src=False)
                      + (ice40_models(["SB_MAC16"]) if part == "ice40" else "")
                      + PRODUCTS_TB.replace("CLOCK", ".clk(clk), .rst(1'b0), " * (part == "ice40")))
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "tb"), "-s", "tb", str(source)],
                   check=True)
    run = subprocess.run(["vvp", "-n", str(tmp_path / "tb")], capture_output=True, text=True,
                         check=True)
    assert "checked 65536 wrong 0" in run.stdout, run.stdout


YOSYS_LOG = """
   Number of cells:               24
          2   SB_CARRY
          3   SB_DFF
          4   SB_DFFE
          7   SB_LUT4
          8   SB_MAC16
"""


# The same statistics as Yosys 0.70 prints them, after an earlier block
YOSYS_070_LOG = """
       12 cells
        9   SB_DFF
=== design hierarchy ===
       58 cells
       20   $scopeinfo
        8   SB_MAC16
      160   SB_DFF
      170   SB_DFFE
        2   SB_DFFR
     3680   SB_LUT4

3.60. Executing CHECK pass (checking for obvious problems).
"""


def test_flip_flops_are_read_from_the_last_statistics_of_either_yosys_format():
    assert bitstream._flip_flops(YOSYS_LOG) == 7
    assert bitstream._flip_flops(YOSYS_070_LOG) == 332


@pytest.mark.parametrize("achieved, met", [(31.5, True), (20.2, False)])
def test_reports_are_parsed_from_the_tools_output(achieved, met):
    # nextpnr also times its constant net when a PLL takes the clock pin; that is not a clock
    nextpnr = {"fmax": {"clk": {"achieved": achieved, "constraint": 24.0},
                        "$PACKER_GND_NET_$glb_clk": {"achieved": 256.1, "constraint": 12.0}},
               "utilization": {"ICESTORM_LC": {"used": 4321, "available": 5280},
                               "ICESTORM_DSP": {"used": 8, "available": 8},
                               "ICESTORM_RAM": {"used": 20, "available": 30},
                               "ICESTORM_SPRAM": {"used": 4, "available": 4}}}
    figures = bitstream.parse_reports("ice40", nextpnr, "Number of cells: 3\n   1   SB_DFF\n" +
                                      YOSYS_LOG)
    assert figures["luts"] == 4321 and figures["dsps"] == 8 and figures["brams"] == 20
    assert figures["ffs"] == 7 and figures["available"]["luts"] == 5280
    assert figures["fmax_mhz"] == achieved and figures["clock_mhz"] == 24.0
    assert figures["timing_met"] is met


@pytest.fixture(scope="module")
def icebreaker_program(lenet, calibration):
    return striate.compile(lenet, calibration, ICEBREAKER.config)


def test_icebreaker_design_runs_lenet_bit_exact_on_its_spram_and_dsp_blocks(icebreaker_program,
                                                                             digits_test):
    """The board's accelerator, its weights in SB_SPRAM256KA blocks and its products two to an
    SB_MAC16 (Yosys' models of them), equals the golden model on every layer, and refuses what
    its configuration leaves out (average pooling, pool padding, pixel pairs: a pair
    descriptor stops with error 1, the sequencer having no check of a pair's shape here, and
    so does one with merged lanes, which need the pairs' second word)."""
    config = ICEBREAKER.config
    xq = icebreaker_program.quantize_input(digits_test[0][:6])
    with open_model("icebreaker") as device:
        outs = device.run(icebreaker_program, xq, return_all=True)
        stats = device.last_run
        d0 = icebreaker_program.descriptors[0]
        assert d0.pool == POOL_MAX and d0.pool_pad_h == 0 and d0.in_h <= config.max_height
        errors = [_hardware_error(device, bad) for bad in (
            replace(d0, pool=POOL_AVG), replace(d0, pool_pad_h=1),
            replace(d0, in_h=config.max_height + 1), replace(d0, pair=1),
            replace(d0, merge=1))]
    assert not config.pairs
    assert errors == [memmap.E_OP, memmap.E_LIMIT, memmap.E_LIMIT, memmap.E_OP, memmap.E_OP]
    golden = icebreaker_program.run_reference(xq, return_all=True)
    for got, want in zip(outs, golden):
        assert np.array_equal(got, want.reshape(got.shape))
    model = program_cycles(icebreaker_program)
    for layer, got, want in zip(icebreaker_program.layers, stats.layer_cycles, model):
        if may_stall(layer, config):        # conv pixels faster than the serial requantizer
            assert got > want, layer.name
        else:
            assert got == want, layer.name
        print(f"{layer.name}: {got} cycles")
    print(f"LeNet on the iCEBreaker configuration: {stats.cycles} cycles per image")
    # the README's and docs/fpga.md's figure (the serial requantizer's stalls are not modelled)
    assert list(stats.layer_cycles) == [99_015, 102_627, 4_318, 426]


def _hardware_error(device, descriptor) -> int:
    """Run ``descriptor`` alone on ``device`` and return the error code it stops with."""
    t = device.transport
    t.write(memmap.address(memmap.PROGRAM), descriptor.to_words())
    t.write(memmap.address(memmap.REG, memmap.LAYERS), [1])
    t.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.START])
    t.wait(2000)        # fetch, the sequencer's size and check program, then the error
    status = int(t.read(memmap.address(memmap.REG, memmap.STATUS))[0])
    assert status & memmap.FAILED and not status & memmap.BUSY
    return int(t.read(memmap.address(memmap.REG, memmap.ERROR))[0])


def test_ulx3s_configuration_runs_lenet_bit_exact_in_the_modelled_cycles(lenet, calibration,
                                                                         digits_test):
    """LeNet on the ULX3S's design as its bitstream has it (128 MACs, the last 64 products in
    logic), every layer bit-exact, its counters the cycle model's (exactly where a layer
    cannot stall; the first, whose pixel pairs take 7 items of work each and the four
    requantizer lanes 8 cycles, within its bound)."""
    program = striate.compile(lenet, calibration, ULX3S.config)
    xq = program.quantize_input(digits_test[0][:20])
    with open_model("ulx3s") as device:
        outs = device.run(program, xq, return_all=True)
        stats = device.last_run
    golden = program.run_reference(xq, return_all=True)
    for got, want in zip(outs, golden):
        assert np.array_equal(got, want.reshape(got.shape))
    assert not timeline.mismatch(program, stats.layer_cycles, stats.cycles)
    stalls = [may_stall(layer, ULX3S.config) for layer in program.layers]
    assert stalls == [True, False, False, False]
    assert list(stats.layer_cycles)[1:] == program_cycles(program)[1:]



@pytest.mark.slow
@pytest.mark.parametrize("board", list(BOARDS))
def test_bitstream_meets_timing(board, tmp_path):
    report = bitstream.build(board, tmp_path)
    saved = json.loads((tmp_path / board / "report.json").read_text())
    assert saved == report and report["timing_met"]
    assert report["luts"] <= report["available"]["luts"]
    assert report["macs_per_cycle"] == BOARDS[board].config.macs_per_cycle
    # the PE array's products on DSP blocks: two per iCE40 SB_MAC16, one per ECP5 MULT18X18D
    # but for those the board builds in logic
    per_block = 2 if board == "icebreaker" else 1
    on_blocks = report["macs_per_cycle"] - BOARDS[board].logic_products
    assert report["dsps"] >= on_blocks // per_block


@pytest.mark.parametrize("name, at_least", [("resnet8", 0.9), ("ds-cnn", 0.75)])
def test_ulx3s_runs_the_mlperf_tiny_convnets_on_chip(name, at_least):
    """The ULX3S's memories hold the MLPerf Tiny ResNet-8 and DS-CNN (random weights) whole:
    no streaming, and its 128-MAC array busy most of the cycles the cycle model predicts (the
    bench and the fuzzer check those cycles against the RTL). DS-CNN's depthwise layers take
    one pixel's word a cycle on 3 of the 8 row groups, at 28 %, so it is busy 76.9 %."""
    from striate.sw.bench import reference_graph
    program = striate.compile(*reference_graph(name), ULX3S.config)
    assert program.stream is None
    ideal = sum(layer.macs for layer in program.layers) / ULX3S.config.macs_per_cycle
    assert ideal / sum(program_cycles(program)) >= at_least
