"""A simulated serial line to the accelerator behind its UART bridge (Verilator, clocked in
C++), with optional fault injection: bit flips and dropped bytes in both directions."""

from __future__ import annotations

import ctypes
import random

from ..sw.runtime import framing
from .fastsim import CModel, build_library

_VP, _U8P = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8)
_SIGNATURES = {
    "send": ([_VP, _U8P, ctypes.c_uint32], None),
    "run": ([_VP, ctypes.c_uint64, ctypes.c_uint32], ctypes.c_uint32),
    "recv": ([_VP, _U8P, ctypes.c_uint32], ctypes.c_uint32),
    "pending": ([_VP], ctypes.c_uint32),
    "cycles": ([_VP], ctypes.c_uint64),
}


class SimSerialPort:
    """pyserial-like port on the simulated UART. ``read`` returns fewer bytes when the line stays
    silent for ``timeout_bytes`` byte times; faults hit each byte with the given probabilities."""

    def __init__(self, config, divisor: int = 4, flip_prob: float = 0.0, drop_prob: float = 0.0,
                 seed: int = 0, timeout_bytes: int = 64):
        self._model = CModel(build_library(config, uart_divisor=divisor), "usim", _SIGNATURES,
                             divisor)
        self.byte_cycles = 10 * divisor
        self.timeout_cycles = timeout_bytes * self.byte_cycles
        # Silence long enough for the bridge to drop a partial frame, with margin.
        self.idle_cycles = (framing.FRAME_TIMEOUT_BITS + 20) * divisor
        self.flip_prob, self.drop_prob = flip_prob, drop_prob
        self.rng = random.Random(seed)
        self.flipped = self.dropped = 0
        self._buffer = bytearray()

    def _faults(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self.rng.random() < self.drop_prob:
                self.dropped += 1
                continue
            if self.rng.random() < self.flip_prob:
                b ^= 1 << self.rng.randrange(8)
                self.flipped += 1
            out.append(b)
        return bytes(out)

    def write(self, data: bytes) -> int:
        sent = self._faults(bytes(data))
        buf = (ctypes.c_uint8 * max(1, len(sent))).from_buffer_copy(sent or b"\0")
        self._model.call("send", buf, len(sent))
        return len(data)

    def _pull(self):
        tmp = (ctypes.c_uint8 * 4096)()
        n = self._model.call("recv", tmp, 4096)
        self._buffer += self._faults(bytes(tmp[:n]))

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            # Wait while our own bytes are still going out, then up to the timeout.
            pending = self._model.call("pending") * self.byte_cycles
            before = len(self._buffer)
            self._model.call("run", pending + self.timeout_cycles, n - len(self._buffer))
            self._pull()
            if len(self._buffer) == before and not self._model.call("pending"):
                break
        out, self._buffer = bytes(self._buffer[:n]), self._buffer[n:]
        return out

    def reset_input_buffer(self):
        self._pull()
        self._buffer.clear()

    def drain(self):
        """Run until every byte written has gone out, then for the bridge's frame timeout."""
        pending = self._model.call("pending") * self.byte_cycles
        self.wait_cycles(pending + self.byte_cycles + self.idle_cycles)

    def wait_cycles(self, cycles: int):
        self._model.call("run", int(cycles), 1 << 31)

    @property
    def cycles(self) -> int:
        return int(self._model.call("cycles"))

    def close(self):
        self._model.close()
