"""The serial transport: the host bus over a UART, framed and CRC-checked (`framing`).

Every request is answered; a response that is late, garbled, out of sequence or reports a
CRC or frame error makes the transport drain the line, wait for the bridge to drop any partial
frame, and send the request again, up to ``retries`` times, then raise `LinkError`. Retried
writes are harmless (same data, same addresses); START is ignored while the accelerator runs.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from . import framing
from .driver import Transport
from ..errors import StriateError


class LinkError(StriateError):
    """The serial link failed to deliver a request after all retries."""


class SerialTransport(Transport):
    """Bus access over ``port``: an object with ``write(bytes)``, ``read(n) -> bytes`` (fewer
    bytes on timeout) and ``reset_input_buffer()``, like ``serial.Serial``; a simulated port may
    also offer ``wait_cycles(n)``. ``clock_hz`` converts `wait` cycles to time on real ports."""

    def __init__(self, port, clock_hz: float = 12e6, retries: int = 8,
                 max_words: int = framing.MAX_WORDS, settle_s: float = 0.01):
        self.port, self.clock_hz, self.retries = port, clock_hz, retries
        self.max_words, self.settle_s = max_words, settle_s
        self.seq = 0
        self.retried = 0          # requests sent again, for tests and reports

    def _settle(self):
        """Let our last request finish going out and the bridge time out any partial frame,
        then drop whatever arrived meanwhile."""
        if hasattr(self.port, "drain"):
            self.port.drain()
        elif hasattr(self.port, "flush"):
            self.port.flush()
            time.sleep(self.settle_s)
        self.port.reset_input_buffer()

    def _read_response(self, count: int):
        """Parse one response; return (status, seq, words) or raise ValueError."""
        for _ in range(64):                      # skip stray bytes before the sync byte
            b = self.port.read(1)
            if not b:
                raise ValueError("timeout waiting for a response")
            if b[0] == framing.RESP_SYNC:
                break
        else:
            raise ValueError("no sync byte")
        head = self.port.read(4)
        if len(head) != 4:
            raise ValueError("truncated header")
        status, seq, n = struct.unpack("<BBH", head)
        if n not in (0, count):
            raise ValueError(f"bad count {n}")
        data = self.port.read(4 * n + 2)
        if len(data) != 4 * n + 2:
            raise ValueError("truncated response")
        if framing.crc16(head + data[:-2]) != struct.unpack("<H", data[-2:])[0]:
            raise ValueError("response CRC mismatch")
        return status, seq, np.frombuffer(data[:-2], "<u4").astype(np.uint32)

    def _transact(self, cmd: int, addr: int, count: int, words=()):
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                self._settle()
            self.seq = (self.seq + 1) & 0xFF
            self.port.write(framing.request(cmd, self.seq, addr, count, words))
            try:
                for _ in range(4):          # skip stale answers to earlier requests
                    status, seq, data = self._read_response(count)
                    if seq == self.seq:
                        break
                    last = f"response to request {seq}, expected {self.seq}"
                else:
                    continue
            except ValueError as exc:
                last = str(exc)
                continue
            if status != framing.OK:
                last = {framing.E_CRC: "bridge saw a CRC error",
                        framing.E_FRAME: "bridge saw a bad frame"}.get(status, f"status {status}")
                continue
            if cmd == framing.READ and len(data) != count:
                last = "read returned no data"
                continue
            return data
        raise LinkError(f"serial link: no valid response after {self.retries + 1} tries "
                        f"(last: {last})")

    def write(self, addr, words):
        words = np.asarray(words, np.uint32)
        for start in range(0, len(words), self.max_words):
            chunk = words[start:start + self.max_words]
            self._transact(framing.WRITE, addr + start, len(chunk), chunk)

    def read(self, addr, count=1):
        parts = [self._transact(framing.READ, addr + start, min(self.max_words, count - start))
                 for start in range(0, count, self.max_words)]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint32)

    def wait(self, cycles):
        if hasattr(self.port, "wait_cycles"):
            self.port.wait_cycles(int(cycles))
        else:
            time.sleep(cycles / self.clock_hz)

    def close(self):
        if hasattr(self.port, "close"):
            self.port.close()
