"""The accelerator's host bus: register map, memory windows and status/error codes.

The bus is 32 bits wide and word addressed: ``addr = region << REGION_SHIFT | offset``. Memory
regions expose each memory row as ``row_words`` consecutive bus words (little-endian: bus word 0
holds bits 0-31 of the row); rows narrower than 32 bits take one bus word each, in its low bits.
Memories can be read and written only while the accelerator is not busy (writes while busy are
dropped, reads return 0). Registers are always accessible.

Registers (region 0, word offsets):

=========  ====  =====================================================================
name       word  meaning
=========  ====  =====================================================================
CTRL       0     write bit 0 = START (ignored while busy); bit 1 = ABORT: stops a run in the
                 cycle after the write and resets the sequencer and datapath (memories keep
                 their contents; BUSY, DONE and ERROR read 0 after it; read a register before
                 the next write); a write with both bits set only aborts
STATUS     1     bit 0 BUSY, bit 1 DONE, bit 2 ERROR (DONE and ERROR clear on START)
ERROR      2     error code (`ERRORS`), 0 if none
LAYER      3     index of the layer running, or the one that failed
LAYERS     4     number of descriptors to run (read/write)
CYCLES     5     cycles from START to DONE or ERROR
PE_BUSY    6     cycles in which the PE array accepted a chunk of work
CONFIG_ID  7     `config_id` of the configuration the hardware was generated for
RUNNING    8     with external memory: the index of the last layer descriptor issued to the
                 datapath (LAYER is then the descriptor the sequencer is about to issue)
LAYER_CYCLES  1024 + i  CYCLES at the end of layer ``i`` (`layer_cycles` turns these into the
                        cycles each layer took, descriptor fetch included); `stamp_words` of
                        them
=========  ====  =====================================================================
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ..config import AcceleratorConfig
from .descriptor import MOVE_TARGETS, LayerDescriptor

REGION_SHIFT = 20
ADDR_BITS = 24              # bus word address width (4-bit region, 20-bit offset)
REG, PROGRAM, PARAMS, WEIGHTS, ACT, TABLES = range(6)
assert MOVE_TARGETS == {"program": PROGRAM, "params": PARAMS, "weights": WEIGHTS, "act": ACT,
                        "tables": TABLES}
TABLE_WORDS = 64            # 32-bit rows per activation table (256 int8 entries, 4 per row)

CTRL, STATUS, ERROR, LAYER, LAYERS, CYCLES, PE_BUSY, CONFIG_ID, RUNNING = range(9)
LAYER_CYCLES = 1024
START, ABORT = 1, 2
BUSY, DONE, FAILED = 1, 2, 4

ERRORS = {
    1: "unknown op or pool code",
    2: "zero size",
    3: "beyond the configuration's limits (width or stride)",
    4: "activation map outside the activation memory",
    5: "weights outside weight memory",
    6: "parameters outside parameter memory",
    7: "inconsistent convolution or pooling geometry",
    8: "unaligned address",
    9: "layer count must be 1 to program_depth",
    10: "transfer overlaps memory a running layer uses",
    11: "transfer outside its on-chip memory",
    12: "transfer outside the external memory",
    13: "the external memory answered a transfer with an error",
    14: "partial sums beyond the partial-sum memory",
}
(E_OP, E_ZERO, E_LIMIT, E_ACT, E_WEIGHT, E_PARAM, E_SHAPE, E_ALIGN, E_COUNT, E_BUSY, E_LOCAL,
 E_EXT, E_BUS, E_PSUM) = range(1, 15)

PARAM_ENTRY_WORDS = 4   # bias, mult, shift, unused


def layer_cycles(stamps) -> list[int]:
    """The cycles each layer took, from the LAYER_CYCLES words of its run (the cycle counter at
    the end of each layer)."""
    out, last = [], 0
    for stamp in (int(s) for s in stamps):
        # a layer ends once every layer before it has (in a streamed program a transfer may
        # finish before an earlier one)
        stamp = max(stamp, last)
        out.append(stamp - last)
        last = stamp
    return out


def stamp_words(config: AcceleratorConfig) -> int:
    """LAYER_CYCLES words: one per descriptor of the program memory, or with external memory
    (where a streamed program stamps each layer's last transfer) at least 256."""
    return max(config.program_depth, 256) if config.ext_bytes else config.program_depth


def config_id(config: AcceleratorConfig) -> int:
    """32-bit fingerprint of a configuration (the hardware's CONFIG_ID register)."""
    text = json.dumps(config.to_dict(), sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little")


@dataclass(frozen=True)
class MemoryShape:
    """One memory: ``depth`` rows of ``width`` bits, each row ``row_words`` bus words."""

    depth: int
    width: int

    @property
    def row_words(self) -> int:
        return max(1, self.width // 32)

    @property
    def row_bytes(self) -> int:
        return self.width // 8

    def bus_offset(self, byte_addr: int) -> int:
        """Bus word offset, in the region, of the row-aligned byte address ``byte_addr``."""
        return byte_addr // self.row_bytes * self.row_words

    def to_bus(self, data) -> np.ndarray:
        """Bytes stored from a row boundary on -> the uint32 bus words that write them."""
        data = np.ascontiguousarray(data, np.uint8)
        if self.row_bytes >= 4:
            return data.view("<u4").astype(np.uint32)
        rows = data.reshape(-1, self.row_bytes)
        return sum(rows[:, b].astype(np.uint32) << (8 * b) for b in range(self.row_bytes))

    def from_bus(self, words) -> np.ndarray:
        """Inverse of `to_bus`: uint32 bus words read back -> the stored bytes."""
        words = np.asarray(words, np.uint32)
        if self.row_bytes >= 4:
            return words.astype("<u4").view(np.uint8)
        return np.stack([(words >> (8 * b)) & 0xFF for b in range(self.row_bytes)], 1) \
            .astype(np.uint8).reshape(-1)


def bits_for(rows: int) -> int:
    """Address bits for ``rows`` rows."""
    return max(1, (rows - 1).bit_length())


def memories(config: AcceleratorConfig) -> dict:
    """The memories a configuration instantiates, by region."""
    po, pi = config.pe_out, config.pe_in
    act = MemoryShape(config.act_bytes // pi, 8 * pi)
    shapes = {
        PROGRAM: MemoryShape(config.program_depth * LayerDescriptor.WORDS, 32),
        PARAMS: MemoryShape(config.param_entries // config.requant_parallel,
                            32 * PARAM_ENTRY_WORDS * config.requant_parallel),
        WEIGHTS: MemoryShape(config.weight_bytes // (po * pi), 8 * po * pi),
        ACT: act,
    }
    if config.activation_tables:    # table t from row t * TABLE_WORDS on, entry i at byte i
        shapes[TABLES] = MemoryShape(config.activation_tables * TABLE_WORDS, 32)
    return shapes


def address(region: int, offset: int = 0) -> int:
    return region << REGION_SHIFT | offset
