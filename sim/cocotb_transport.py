"""The ``cocotb`` backend: the Verilog under cocotb + Verilator, in a simulator process that
serves bus requests (`tb_serve`) over two FIFOs. Python drives every bus access, so it is the
slowest way to the RTL; it exists to check cocotb, Verilator-in-C++ and Amaranth agree."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..sw.runtime.driver import Transport
from ..sw.errors import StriateError
from . import build
from .cocotb_run import build_runner


class CocotbTransport(Transport):
    def __init__(self, config):
        runner, build_dir = build_runner(config, "verilator")
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
                            extra_env={"STRIATE_REQUESTS": str(req),
                                       "STRIATE_RESPONSES": str(resp),
                                       "COCOTB_REWRITE_ASSERTION_FILES": "test_*.py"})
            except BaseException as exc:     # the runner exits when the testbench fails
                self._error = exc
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
            raise StriateError(f"cocotb simulation is gone: {exc}") from None
        if not line:
            raise StriateError(f"cocotb simulation ended unexpectedly ({self._error!r})")
        return json.loads(line)

    def write(self, addr, words):
        self._call(op="write", addr=int(addr), words=[int(w) for w in np.asarray(words, np.uint32)])

    def read(self, addr, count=1):
        return np.array(self._call(op="read", addr=int(addr), count=int(count))["words"],
                        np.uint32)

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
