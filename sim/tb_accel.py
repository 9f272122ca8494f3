"""cocotb testbench for the whole accelerator: loads a job, runs it, saves what it read.

The job (a JSON file named by ``STRIATE_JOB``) lists bus writes to do once, then runs; each run
writes its input blocks, sets LAYERS, writes START, waits for DONE or ERROR, and reads the
registers and the listed output blocks. Results go to the job's ``result`` path as ``.npz``.
Python only drives the bus; the clock runs inside the simulator.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout

from striate.sw.mapping import memmap


class Bus:
    """The accelerator's host bus, with optional random idle cycles between accesses."""

    def __init__(self, dut, stall_prob=0.0, seed=0):
        self.dut = dut
        self.stall_prob = stall_prob
        self.rng = random.Random(seed)
        dut.w_en.value = 0
        dut.r_en.value = 0

    async def _idle(self):
        while self.stall_prob and self.rng.random() < self.stall_prob:
            await RisingEdge(self.dut.clk)

    async def write(self, addr, words):
        dut = self.dut
        for i, word in enumerate(np.asarray(words, np.uint32).tolist()):
            await self._idle()
            dut.addr.value = addr + i
            dut.w_data.value = word
            dut.w_en.value = 1
            await RisingEdge(dut.clk)
        dut.w_en.value = 0

    async def read(self, addr, count=1):
        dut, out = self.dut, []
        for i in range(count):
            await self._idle()
            dut.addr.value = addr + i
            dut.r_en.value = 1
            await RisingEdge(dut.clk)
            dut.r_en.value = 0
            await ReadOnly()
            out.append(int(dut.r_data.value))
            await RisingEdge(dut.clk)
        return np.array(out, np.uint32)

    async def reg(self, index):
        return int((await self.read(memmap.address(memmap.REG, index)))[0])


def attach_memory(dut, size: int, bytes_per_cycle: int):
    """cocotbext-axi's ``AxiRam`` of ``size`` bytes on the accelerator's AXI4 port (``axi_*``),
    each direction throttled to ``bytes_per_cycle``; None for a configuration without one.
    The RAM answers a burst a few cycles after its address (its own latency)."""
    if not size:
        return None
    from cocotbext.axi import AxiBus, AxiRam
    ram = AxiRam(AxiBus.from_prefix(dut, "axi"), dut.clk, dut.rst, size=size)
    for side in (ram.write_if, ram.read_if):
        side.log.setLevel(logging.WARNING)          # it logs every burst at INFO
    if bytes_per_cycle < 8:
        ram.read_if.r_channel.set_pause_generator(_throttle(bytes_per_cycle))
        ram.write_if.w_channel.set_pause_generator(_throttle(bytes_per_cycle))
    return ram


def _throttle(bytes_per_cycle: int):
    """Pauses for a channel of ``bytes_per_cycle``: it gains that much credit a cycle, up to a
    beat's 8 bytes, and a cycle without a pause spends a beat's worth."""
    credit = 8
    while True:
        if credit >= 8:
            credit -= 8
            yield False
        else:
            yield True
        credit = min(8, credit + bytes_per_cycle)


async def _run_one(dut, bus, run, layers, timeout_cycles):
    for addr, words in run["inputs"]:
        await bus.write(addr, np.array(words, np.uint32))
    await bus.write(memmap.address(memmap.REG, memmap.LAYERS), [layers])
    await bus.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.START])
    await RisingEdge(dut.clk)
    started = time.perf_counter()
    if int(dut.busy.value):
        await with_timeout(dut.busy.value_change, timeout_cycles * 10, "ns")
    run_ns = int((time.perf_counter() - started) * 1e9)
    status = await bus.reg(memmap.STATUS)
    result = {"status": status, "error": await bus.reg(memmap.ERROR),
              "layer": await bus.reg(memmap.LAYER), "cycles": await bus.reg(memmap.CYCLES),
              "pe_busy": await bus.reg(memmap.PE_BUSY), "wall_ns": run_ns,
              "layer_cycles": memmap.layer_cycles(await bus.read(
                  memmap.address(memmap.REG, memmap.LAYER_CYCLES), layers))}
    for k, (addr, count) in enumerate(run["outputs"]):
        result[f"out{k}"] = await bus.read(addr, count)
    return result


@cocotb.test()
async def run_job(dut):
    with open(os.environ["STRIATE_JOB"]) as f:
        job = json.load(f)
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    bus = Bus(dut, job.get("stall_prob", 0.0), job.get("seed", 0))
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    saved = {"config_id": np.array([await bus.reg(memmap.CONFIG_ID)], np.uint32)}
    for addr, words in job["load"]:
        await bus.write(addr, np.array(words, np.uint32))
    for r, run in enumerate(job["runs"]):
        result = await _run_one(dut, bus, run, run["layers"], job["timeout_cycles"])
        for key, value in result.items():
            saved[f"run{r}_{key}"] = np.asarray(value, np.int64)
    np.savez(job["result"], **saved)
