"""Verilog export: lint-clean under Verilator -Wall with the documented waivers."""

import pytest

from striate.hw.platform import export
from striate.sw.config import AcceleratorConfig

SMALL = AcceleratorConfig(pe_out=2, pe_in=8, max_width=16, act_bytes=2048,
                          weight_bytes=4096, param_entries=64, program_depth=4)


@pytest.mark.parametrize("config", [AcceleratorConfig(), SMALL], ids=["default", "small"])
def test_verilog_is_lint_clean(config, tmp_path):
    path = export.write_verilog(config, tmp_path / "top.v")
    assert export.lint(path) == []


@pytest.mark.slow
def test_synthesis_report_counts_the_pe_array(tmp_path):
    report = export.synth_report(export.write_verilog(SMALL, tmp_path / "top.v"))
    assert report["multipliers"]["8x8"] == SMALL.macs_per_cycle
    assert report["memory_bits"] >= 8 * (SMALL.act_bytes + SMALL.weight_bytes)
