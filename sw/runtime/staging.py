"""External memory reached through the accelerator itself, for a transport without a backdoor
into it (a board over its serial line).

Bytes to write go over the host bus into the activation memory, and a program of one transfer
(`MoveDescriptor` with ``store``) copies them out; to read, a transfer copies them in and the
host reads the activation memory. The activation memory's side moves whole 32-bit words, so a
range that starts or ends inside a row of the activation memory (``pe_in`` bytes, at least a
word on configurations with external memory) is widened to whole rows, read first so that the
bytes around it keep their values. Each staging run overwrites program slot 0, the
activation memory and the counters; `Device` rewrites slot 0 before the program's next run.
"""

from __future__ import annotations

import numpy as np

from ..mapping import memmap
from ..mapping.descriptor import OP_MOVE, MoveDescriptor


def _rows(config, addr: int, count: int) -> tuple[int, int, object]:
    """The whole activation memory rows around bytes ``addr .. addr + count - 1``: (first
    byte, end byte, the memory's shape)."""
    shape = memmap.memories(config)[memmap.ACT]
    unit = shape.row_bytes
    return addr - addr % unit, -(-(addr + count) // unit) * unit, shape


def write(transport, config, addr: int, data: bytes) -> None:
    """Write ``data`` to external byte ``addr`` on (within ``config.ext_bytes``)."""
    if not data:
        return
    first, end, shape = _rows(config, addr, len(data))
    if (first, end) != (addr, addr + len(data)):
        whole = bytearray(read(transport, config, first, end - first))
        whole[addr - first:addr - first + len(data)] = data
        data, addr = bytes(whole), first
    for start in range(0, len(data), config.act_bytes):
        part = np.frombuffer(data[start:start + config.act_bytes], np.uint8)
        transport.write(memmap.address(memmap.ACT, 0), shape.to_bus(part))
        _move(transport, config, addr + start, len(part), store=1)


def read(transport, config, addr: int, count: int) -> np.ndarray:
    """``count`` bytes (uint8) of external memory from byte ``addr`` on."""
    first, end, shape = _rows(config, addr, count)
    out = bytearray()
    for start in range(first, end, config.act_bytes):
        size = min(config.act_bytes, end - start)
        _move(transport, config, start, size, store=0)
        words = transport.read(memmap.address(memmap.ACT, 0), shape.bus_offset(size))
        out += shape.from_bus(words).tobytes()
    return np.frombuffer(bytes(out[addr - first:addr - first + count]), np.uint8).copy()


def _move(transport, config, ext_addr: int, length: int, store: int) -> None:
    """Run a program of one transfer between external byte ``ext_addr`` and the start of the
    activation memory; `DeviceError` if it stops with an error."""
    from .driver import DeviceError
    move = MoveDescriptor(op=OP_MOVE, store=store, target=memmap.ACT, ext_addr=ext_addr,
                          local_addr=0, length=length, count=1)
    transport.write(memmap.address(memmap.PROGRAM, 0), move.to_words())
    transport.write(memmap.address(memmap.REG, memmap.LAYERS), [1])
    transport.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.START])
    # A transfer moves up to two words a cycle after the memory's latency; a memory
    # controller may hold its port for its own start-up first (LiteDRAM's chip
    # initialisation: about 20,500 cycles after reset).
    budget = 100_000 + 8 * length
    waited = 0
    while True:
        status = int(transport.read(memmap.address(memmap.REG, memmap.STATUS))[0])
        if status & memmap.FAILED:
            code = int(transport.read(memmap.address(memmap.REG, memmap.ERROR))[0])
            raise DeviceError(f"staging {length} bytes {'to' if store else 'from'} external "
                              f"byte {ext_addr} stopped with error {code} "
                              f"({memmap.ERRORS.get(code, 'unknown code')})")
        if status & memmap.DONE and not status & memmap.BUSY:
            return
        if waited >= budget:
            transport.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.ABORT])
            transport.read(memmap.address(memmap.REG, memmap.STATUS))   # (it acts a cycle on)
            raise DeviceError(f"staging {length} bytes through the activation memory did not "
                              f"finish within {budget:,} cycles (stopped with CTRL.ABORT)")
        transport.wait(256)
        waited += 256
