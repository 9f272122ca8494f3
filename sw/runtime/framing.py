"""The serial link protocol between the host and the accelerator's UART bridge.

Request:  ``A5 | cmd | seq | addr (3 bytes LE, bus word address) | count (2 bytes LE) |
          data (4 * count bytes LE, writes only) | crc16 (2 bytes LE)``
Response: ``5A | status | seq | count (2 bytes LE) | data (4 * count bytes, successful reads) |
          crc16 (2 bytes LE)``

``cmd`` is `WRITE` or `READ`; ``count`` is 1 to the bridge's ``max_words``. The CRC is
CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF) over everything after the sync
byte. The bridge executes a request only after its CRC checks; a bad request is answered with
`E_CRC` or `E_FRAME` and not executed. A request cut short by lost bytes is dropped when the line
stays idle for `FRAME_TIMEOUT_BITS` bit times.

>>> hex(crc16(b"123456789"))
'0x29b1'
"""

from __future__ import annotations

import struct

REQ_SYNC, RESP_SYNC = 0xA5, 0x5A
WRITE, READ = 1, 2
OK, E_CRC, E_FRAME = 0, 1, 2
MAX_WORDS = 64
FRAME_TIMEOUT_BITS = 40     # bit times of silence after which the bridge drops a partial frame


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def request(cmd: int, seq: int, addr: int, count: int, words=()) -> bytes:
    body = struct.pack("<BBI", cmd, seq & 0xFF, addr)[:5] + struct.pack("<H", count)
    body += b"".join(struct.pack("<I", int(w) & 0xFFFFFFFF) for w in words)
    return bytes([REQ_SYNC]) + body + struct.pack("<H", crc16(body))


def response(status: int, seq: int, count: int, words=()) -> bytes:
    body = struct.pack("<BBH", status, seq & 0xFF, count)
    body += b"".join(struct.pack("<I", int(w) & 0xFFFFFFFF) for w in words)
    return bytes([RESP_SYNC]) + body + struct.pack("<H", crc16(body))
