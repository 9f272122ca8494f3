"""The ``pysim`` backend: the accelerator in the Amaranth simulator, driven through the bus.

Slow (Python evaluates every cycle), so meant for small configurations and for checking that the
Amaranth design, its Verilog under Verilator and under cocotb all agree.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..sw.runtime.driver import Transport
from .extmem import AxiMemory, Timing, serve


class _Command:
    def __init__(self, kind, addr=0, words=(), count=0):
        self.kind, self.addr, self.words, self.count = kind, addr, words, count
        self.result, self.done = [], False


class PysimTransport(Transport):
    """Bus access to an `Accelerator` in the Amaranth simulator of this process."""

    ext_backdoor = True

    def __init__(self, config, timing: Timing = Timing()):
        from amaranth.sim import Simulator
        from ..hw.core.top import Accelerator
        self.dut = Accelerator(config)
        self._queue = deque()
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1e-8)
        self.sim.add_testbench(self._bench, background=True)
        self.memory = AxiMemory(config.ext_bytes, timing) if config.ext_bytes else None
        if self.memory is not None:
            async def memory(ctx):
                await serve(ctx, self.dut, self.memory)
            self.sim.add_testbench(memory, background=True)

    async def _bench(self, ctx):
        dut = self.dut
        while True:
            if not self._queue:
                await ctx.tick()
                continue
            cmd = self._queue.popleft()
            if cmd.kind == "write":
                for i, word in enumerate(cmd.words):
                    ctx.set(dut.addr, cmd.addr + i)
                    ctx.set(dut.w_data, int(word))
                    ctx.set(dut.w_en, 1)
                    await ctx.tick()
                ctx.set(dut.w_en, 0)
            elif cmd.kind == "read":
                for i in range(cmd.count):
                    ctx.set(dut.addr, cmd.addr + i)
                    ctx.set(dut.r_en, 1)
                    await ctx.tick()
                    ctx.set(dut.r_en, 0)
                    cmd.result.append(ctx.get(dut.r_data))
            elif cmd.count:
                await ctx.tick().repeat(cmd.count)
            cmd.done = True

    def _do(self, cmd):
        self._queue.append(cmd)
        while not cmd.done:
            self.sim.advance()
        return cmd.result

    def write(self, addr, words):
        self._do(_Command("write", addr, [int(w) for w in np.asarray(words, np.uint32)]))

    def read(self, addr, count=1):
        return np.array(self._do(_Command("read", addr, count=count)), np.uint32)

    def wait(self, cycles):
        self._do(_Command("wait", count=int(cycles)))

    def write_ext(self, addr, data):
        if self.memory is None:
            return super().write_ext(addr, data)
        self.memory.load(addr, data)

    def read_ext(self, addr, count):
        if self.memory is None:
            return super().read_ext(addr, count)
        return self.memory.dump(addr, count)
