"""`make bench` still runs (slow tier: it times every simulator)."""

import json

import pytest

from striate.sw.bench import run_bench


@pytest.mark.slow
def test_bench_writes_its_table(tmp_path):
    result = run_bench(tmp_path / "bench.json", images=4, log=lambda line: None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["cycles_per_image"] == result["cycles_per_image"] == 15232
    assert set(saved["simulators"]) == {"verilator", "cocotb", "pysim"}
    assert [r["measured_cycles"] for r in saved["layers"]] == [1820, 12828, 540, 44]
