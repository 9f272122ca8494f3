"""The external memory model of the simulators: an AXI4 slave with a stated latency and bandwidth.

`Timing` (`striate.sw.config.MemoryTiming`) is the model of the fast backend (`harness.cpp` has
it in C++) and of the Amaranth simulator (`AxiMemory` below). The cocotb backend serves the port
from cocotbext-axi's ``AxiRam`` instead, which answers in 2 cycles and is throttled to the
bandwidth (`tb_accel.attach_memory`); `tests/test_stream.py` compares it with this model:

- Address channels are always ready. A read burst accepted in cycle ``t`` has its first
  beat ready from cycle ``t + latency`` on; a write burst's response is ready ``latency``
  cycles after its last data beat.
- Data beats (8 bytes), read and written, share one channel of ``bytes_per_cycle``: it gains
  that many bytes of credit a cycle, up to one beat's worth, and a beat spends 8. So at 8
  bytes a cycle a beat moves every cycle, at 2 every fourth cycle.
- Read beats leave in order of their bursts; write beats are taken only for a burst whose
  address has come. A read beat goes first when both could move in a cycle.
"""

from __future__ import annotations

from collections import deque
import numpy as np

from ..sw.config import MemoryTiming as Timing

BEAT = 8


# (name, width) of the signals the model drives and of those it samples.
DRIVEN = (("awready", 1), ("wready", 1), ("bresp", 2), ("bvalid", 1), ("arready", 1),
          ("rdata", 64), ("rresp", 2), ("rlast", 1), ("rvalid", 1))
SAMPLED = ("awaddr", "awlen", "awvalid", "wdata", "wstrb", "wlast", "wvalid", "bready",
           "araddr", "arlen", "arvalid", "rready")


class AxiMemory:
    """`Timing` over ``size`` bytes, one clock cycle per `outputs` + `clock`."""

    def __init__(self, size: int, timing: Timing = Timing()):
        self.data = np.zeros(size, np.uint8)
        self.timing = timing
        self.now = 0
        self.credit = BEAT
        self.reads = deque()        # [ready cycle, beat address, beats left]
        self.writes = deque()       # [beat address, beats left]
        self.responses = deque()    # ready cycles
        self.error = False          # an access outside the memory was answered SLVERR

    def _beat(self, addr: int) -> int:
        if addr + BEAT > len(self.data):
            return 0
        return int(self.data[addr:addr + BEAT].view("<u8")[0])

    def outputs(self) -> dict:
        """The slave's signals in the current cycle."""
        out = {"awready": 1, "arready": 1, "bresp": 0, "rresp": 0, "rdata": 0, "rlast": 0}
        read = self.reads[0] if self.reads else None
        rvalid = read is not None and read[0] <= self.now and self.credit >= BEAT
        if rvalid:
            out.update(rdata=self._beat(read[1]), rlast=int(read[2] == 1),
                       rresp=2 * int(read[1] + BEAT > len(self.data)))
        out["rvalid"] = int(rvalid)
        out["wready"] = int(bool(self.writes) and self.credit >= BEAT and not rvalid)
        out["bvalid"] = int(bool(self.responses) and self.responses[0] <= self.now)
        return out

    def clock(self, s: dict, out: dict) -> None:
        """The clock edge, with the master's signals ``s`` sampled before it and the slave's
        ``out`` of this cycle."""
        lat = self.timing.latency
        if s["arvalid"]:
            self.reads.append([self.now + lat, s["araddr"], s["arlen"] + 1])
        if s["awvalid"]:
            self.writes.append([s["awaddr"], s["awlen"] + 1])
        spent = False
        if out["rvalid"] and s["rready"]:
            read = self.reads[0]
            read[1] += BEAT
            read[2] -= 1
            if read[2] == 0:
                self.reads.popleft()
            spent = True
        elif out["wready"] and s["wvalid"]:
            write = self.writes[0]
            addr = write[0]
            if addr + BEAT <= len(self.data):
                for b in range(BEAT):
                    if (s["wstrb"] >> b) & 1:
                        self.data[addr + b] = (s["wdata"] >> (8 * b)) & 0xFF
            else:
                self.error = True
            write[0] += BEAT
            write[1] -= 1
            if write[1] == 0 or s["wlast"]:
                self.writes.popleft()
                self.responses.append(self.now + lat)
            spent = True
        if out["bvalid"] and s["bready"]:
            self.responses.popleft()
        self.credit = min(BEAT, self.credit - BEAT * spent + self.timing.bytes_per_cycle)
        self.now += 1

    def load(self, addr: int, data) -> None:
        data = np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray) \
            else np.ascontiguousarray(data, np.uint8).reshape(-1)
        self.data[addr:addr + len(data)] = data

    def dump(self, addr: int, count: int) -> np.ndarray:
        return self.data[addr:addr + count].copy()


async def serve(ctx, dut, memory: AxiMemory, prefix: str = "axi_"):
    """An Amaranth testbench that answers ``dut``'s AXI4 master ports from ``memory``."""
    driven = {name: getattr(dut, prefix + name) for name, _ in DRIVEN}
    sampled = [getattr(dut, prefix + name) for name in SAMPLED]
    while True:
        out = memory.outputs()
        for name, signal in driven.items():
            ctx.set(signal, out[name])
        _, _, *values = await ctx.tick().sample(*sampled)
        memory.clock(dict(zip(SAMPLED, values)), out)
