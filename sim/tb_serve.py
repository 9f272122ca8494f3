"""cocotb testbench that serves host bus requests from another process.

Requests arrive as JSON lines on the FIFO ``STRIATE_REQUESTS`` (``write``, ``read``, ``wait``,
``write_ext``, ``read_ext``, ``close``) and answers go back on ``STRIATE_RESPONSES``; see
`cocotb_transport`. The simulator stands still while it waits for a request. With
``STRIATE_EXT_BYTES``, cocotbext-axi's ``AxiRam`` serves the AXI4 port (`tb_accel.attach_memory`)
at ``STRIATE_EXT_BANDWIDTH`` bytes a cycle; ``write_ext`` and ``read_ext`` reach it directly.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from striate.sim.tb_accel import Bus, attach_memory


@cocotb.test()
async def serve(dut):
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    bus = Bus(dut)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    # In reset, with every signal defined: the RAM starts sampling when the reset ends.
    ram = attach_memory(dut, int(os.environ.get("STRIATE_EXT_BYTES", "0")),
                        int(os.environ.get("STRIATE_EXT_BANDWIDTH", "8")))
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    with open(os.environ["STRIATE_REQUESTS"]) as requests, \
            open(os.environ["STRIATE_RESPONSES"], "w") as responses:
        for line in requests:
            cmd = json.loads(line)
            reply = {}
            if cmd["op"] == "write":
                await bus.write(cmd["addr"], cmd["words"])
            elif cmd["op"] == "read":
                reply["words"] = [int(w) for w in await bus.read(cmd["addr"], cmd["count"])]
            elif cmd["op"] == "write_ext":
                ram.write(cmd["addr"], bytes.fromhex(cmd["data"]))
            elif cmd["op"] == "read_ext":
                reply["data"] = ram.read(cmd["addr"], cmd["count"]).hex()
            elif cmd["op"] == "wait":
                if cmd["cycles"]:
                    await ClockCycles(dut.clk, cmd["cycles"])
            else:
                break
            responses.write(json.dumps(reply) + "\n")
            responses.flush()
