"""The ``cocotb`` backend: the Verilog under cocotb + Verilator (or Icarus), in a simulator
process that serves bus requests (`tb_serve`) over two FIFOs. Python drives every bus access, so
it is the slowest way to the RTL; it exists to check cocotb, Verilator-in-C++ and Amaranth
agree. A configuration with external memory gets cocotbext-axi's ``AxiRam`` on its AXI4 port,
at the bandwidth of the timing given; its latency is the RAM's own (a few cycles), so the
counters differ from the cycle model's for that timing wherever transfers are waited for."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..sw.runtime.driver import Transport
from ..sw.errors import StriateError
from . import build
from .cocotb_run import build_runner


class CocotbTransport(Transport):
    """With ``sdram``, the design is the accelerator on the ULX3S's LiteDRAM core with
    LiteDRAM's model of the chip (`build.verilog`): no backdoor, so a `Device` reaches the
    external memory through the accelerator (`striate.sw.runtime.staging`), as on the board."""

    def __init__(self, config, simulator: str = "verilator", timing=None, sdram: bool = False):
        runner, build_dir = build_runner(config, simulator, sdram)
        self.ext_backdoor = not sdram
        self._ext_bytes = 0 if sdram else config.ext_bytes
        bandwidth = timing.bytes_per_cycle if timing is not None else 8
        self._tmp = tempfile.TemporaryDirectory(prefix="striate-serve-")
        tmp = Path(self._tmp.name)
        req, resp = tmp / "requests", tmp / "responses"
        os.mkfifo(req)
        os.mkfifo(resp)
        self._error = None

        def serve():
            try:
                runner.test(test_module="striate.sim.tb_serve", hdl_toplevel=build.TOP,
                            build_dir=build_dir, test_dir=tmp, log_file=tmp / "sim.log",
                            timescale=None if simulator == "verilator" else ("1ns", "1ps"),
                            extra_env={"STRIATE_REQUESTS": str(req),
                                       "STRIATE_RESPONSES": str(resp),
                                       "STRIATE_EXT_BYTES": str(self._ext_bytes),
                                       "STRIATE_EXT_BANDWIDTH": str(bandwidth),
                                       "COCOTB_REWRITE_ASSERTION_FILES": "test_*.py"})
            except BaseException as exc:     # the runner exits when the testbench fails
                self._error = exc
            finally:
                _release(req, resp)
        self._log = tmp / "sim.log"
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        self._requests = open(req, "w")
        self._responses = open(resp)

    def _call(self, **cmd):
        try:
            self._requests.write(json.dumps(cmd) + "\n")
            self._requests.flush()
            line = self._responses.readline()
        except OSError as exc:
            raise StriateError(f"cocotb simulation is gone: {exc}{self._log_tail()}") from None
        if not line:
            raise StriateError(f"cocotb simulation ended unexpectedly ({self._error!r})"
                               f"{self._log_tail()}")
        return json.loads(line)

    def _log_tail(self) -> str:
        try:
            return "; its log ends:\n" + self._log.read_text()[-3000:]
        except OSError:
            return ""

    def write(self, addr, words):
        self._call(op="write", addr=int(addr), words=[int(w) for w in np.asarray(words, np.uint32)])

    def read(self, addr, count=1):
        return np.array(self._call(op="read", addr=int(addr), count=int(count))["words"],
                        np.uint32)

    def write_ext(self, addr, data):
        data = self._as_bytes(data)
        self._ext_range(self._ext_bytes, addr, len(data))
        self._call(op="write_ext", addr=int(addr), data=data.hex())

    def read_ext(self, addr, count):
        self._ext_range(self._ext_bytes, addr, count)
        return np.frombuffer(bytes.fromhex(self._call(op="read_ext", addr=int(addr),
                                                      count=int(count))["data"]), np.uint8)

    def wait(self, cycles):
        self._call(op="wait", cycles=int(cycles))

    def close(self):
        if self._requests is None:
            return
        try:
            self._requests.write(json.dumps({"op": "close"}) + "\n")
            self._requests.close()
        except OSError:
            pass
        self._thread.join(timeout=60)
        self._responses.close()
        self._requests = None
        self._tmp.cleanup()


def _release(req: Path, resp: Path) -> None:
    """Once the simulation has ended: open the far ends of the FIFOs without blocking, so that a
    constructor still waiting to open them goes on (and finds the simulation gone)."""
    fds = [os.open(req, os.O_RDONLY | os.O_NONBLOCK)]
    try:
        for _ in range(50):     # the constructor opens the responses once the requests are open
            try:
                fds.append(os.open(resp, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:     # no reader yet, or none any more
                time.sleep(0.1)
    finally:
        for fd in fds:
            os.close(fd)
