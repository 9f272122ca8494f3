"""The UART bridge RTL and the serial transport, over a simulated line with injected faults."""

import random
import re

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.sim import Simulator

from striate.hw.platform.uart import UartRx, UartTx
from striate.sim.serial_sim import SimSerialPort
from striate.sw.runtime import framing
from striate.sw.mapping import memmap
from striate.sw.golden.cycles import program_cycles
from striate.sw.runtime.driver import Device
from striate.sw.runtime.serial_link import LinkError, SerialTransport

from test_rtl import SMALL


def test_uart_loopback_in_the_amaranth_simulator():
    """UartTx -> line -> UartRx carries every byte, with the receiver's reader stalling."""
    tx, rx = UartTx(5), UartRx(5)

    class Loop(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.tx, m.submodules.rx = tx, rx
            m.d.comb += rx.rx.eq(tx.tx)
            return m
    data = [random.Random(1).randrange(256) for _ in range(40)]
    got = []
    sim = Simulator(Loop())
    sim.add_clock(1e-6)

    async def send(ctx):
        for byte in data:
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, byte)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def receive(ctx):
        rng = random.Random(2)
        while len(got) < len(data):
            ctx.set(rx.o.ready, rng.random() < 0.5)   # a byte waits at most ~a byte time
            *_, valid, ready, payload = await ctx.tick().sample(rx.o.valid, rx.o.ready,
                                                                rx.o.payload)
            if valid and ready:
                got.append(payload)
    sim.add_testbench(send, background=True)
    sim.add_testbench(receive)
    sim.run()
    assert got == data


@pytest.fixture(scope="module")
def clean_port():
    port = SimSerialPort(SMALL, divisor=4)
    yield port
    port.close()


def _raw(port, frame: bytes, count: int):
    port.reset_input_buffer()
    port.write(frame)
    return SerialTransport(port)._read_response(count)


def test_bridge_answers_bad_requests_without_executing_them(clean_port):
    port, addr = clean_port, memmap.address(memmap.WEIGHTS, 8)
    link = SerialTransport(port)
    link.write(addr, [11, 22])
    good = framing.request(framing.WRITE, 7, addr, 2, [99, 98])
    bad_crc = good[:-2] + bytes([good[-2] ^ 1, good[-1]])
    assert _raw(port, bad_crc, 2)[:2] == (framing.E_CRC, 7)
    bad_data = good[:9] + bytes([good[9] ^ 0x10]) + good[10:]     # a flipped data bit
    assert _raw(port, bad_data, 2)[0] == framing.E_CRC
    assert _raw(port, framing.request(framing.WRITE, 8, addr, 0), 0)[0] == framing.E_FRAME
    assert _raw(port, framing.request(9, 9, addr, 1, [5]), 1)[0] == framing.E_FRAME
    assert link.read(addr, 2).tolist() == [11, 22]                  # nothing was executed
    status, seq, words = _raw(port, framing.request(framing.READ, 10, addr, 2), 2)
    assert (status, seq, words.tolist()) == (framing.OK, 10, [11, 22])


def test_partial_frame_is_dropped_after_the_timeout(clean_port):
    port, addr = clean_port, memmap.address(memmap.WEIGHTS, 20)
    port.write(framing.request(framing.WRITE, 3, addr, 1, [1234])[:6])   # cut short
    port.drain()
    link = SerialTransport(port)
    link.write(addr, [4321])
    assert link.read(addr).tolist() == [4321] and link.retried == 0


def test_heavy_faults_never_give_a_wrong_result():
    """Short frames at 1 % flips and 1 % drops per byte: every transfer is retried until right."""
    port = SimSerialPort(SMALL, divisor=4, flip_prob=0.01, drop_prob=0.01, seed=3)
    link = SerialTransport(port, retries=20)
    rng = np.random.default_rng(0)
    base = memmap.address(memmap.WEIGHTS)
    for i in range(150):
        words = rng.integers(0, 2**32, 4, dtype=np.uint32)
        link.write(base + 4 * i, words)
        assert link.read(base + 4 * i, 4).tolist() == words.tolist(), i
    assert port.flipped > 20 and port.dropped > 20 and link.retried > 20
    port.close()


def test_dead_line_raises_after_bounded_retries():
    port = SimSerialPort(SMALL, divisor=4, drop_prob=1.0)
    link = SerialTransport(port, retries=2)
    with pytest.raises(LinkError, match=re.escape(
            "serial link: no valid response after 3 tries (last: timeout waiting for a "
            "response)")):
        link.read(memmap.address(memmap.REG, memmap.STATUS))
    port.close()


def test_lenet_through_the_uart_bridge_with_faults(lenet_program, digits_test):
    """The whole LeNet over the simulated serial line, faults included, equals the golden
    model on every layer."""
    port = SimSerialPort(lenet_program.config, divisor=4, flip_prob=2e-4, drop_prob=2e-4,
                         seed=1)
    link = SerialTransport(port)
    dev = Device(link, lenet_program.config, "UART simulation")
    xq = lenet_program.quantize_input(digits_test[0][:1])
    outs = dev.run(lenet_program, xq, return_all=True)
    for got, want in zip(outs, lenet_program.run_reference(xq, return_all=True)):
        np.testing.assert_array_equal(got, want.reshape(got.shape))
    assert dev.last_run.cycles == sum(program_cycles(lenet_program))    # as on the plain bus
    assert port.flipped and port.dropped and link.retried
    port.close()
