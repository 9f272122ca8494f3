"""`make bench` still runs (slow tier: it times every simulator)."""

import json

import pytest

import striate
from striate.sw.bench import run_bench
from striate.sw.golden.cycles import program_cycles


@pytest.mark.slow
def test_bench_writes_its_table(tmp_path, lenet, calibration):
    result = run_bench(tmp_path / "bench.json", images=4, log=lambda line: None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    predicted = program_cycles(striate.compile(lenet, calibration))
    assert saved["cycles_per_image"] == result["cycles_per_image"] == sum(predicted)
    assert [r["measured_cycles"] for r in saved["layers"]] == predicted
    assert set(saved["simulators"]) == {"verilator", "cocotb", "pysim"}
    resnet8 = saved["reference_models"]["resnet8"]
    ideal = sum(r["ideal_cycles"] for r in resnet8)
    assert ideal / sum(r["measured_cycles"] for r in resnet8) >= 0.85
    assert [r["op"] for r in resnet8].count("add") == 3
    boards = saved["boards"]        # both networks on chip on the ULX3S, bit-exact
    assert set(boards) == {f"{n}@{b}" for n in ("resnet8", "ds-cnn")
                           for b in ("ulx3s", "ulx3s-sdram")}
    assert all(row["bit_exact_layers"] == row["layers"] for row in boards.values())
    # 89.5 % on the ULX3S's 128 MACs: its 1 x 1 shortcut convolutions wait for the four
    # requantizer lanes (8 cycles a pixel of 32 channels, 4 items of work)
    resnet8 = boards["resnet8@ulx3s"]
    assert not resnet8["streamed"] and resnet8["utilization"] > .85
