"""The layer descriptor: one frozen dataclass whose fields declare their bit widths.

The hardware derives its descriptor ``StructLayout`` from `LayerDescriptor.fields_layout`, and the
driver packs descriptors into program memory words with `LayerDescriptor.to_words`. Fields are
packed in declaration order from bit 0 upwards; words are 32 bits, least significant first.

>>> d = LayerDescriptor(op=OP_CONV, in_c=1, in_h=8, in_w=8, out_c=4, conv_h=8, conv_w=8,
...                     out_h=8, out_w=8, k_h=3, k_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1,
...                     act_lo=0, act_hi=127)
>>> LayerDescriptor.from_words(d.to_words()) == d
True
>>> len(d.to_words()) == LayerDescriptor.WORDS
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import StriateError
from ..ir.numerics import ADD_MULT_BITS, ADD_SHIFT_BITS

OP_MOVE = 0       # a transfer between the external memory and an on-chip memory (`MoveDescriptor`)
OP_CONV = 1       # a layer on the convolution datapath
OP_ADD = 2        # an element-wise add of the maps at in_addr and in2_addr
OP_DW = 3         # a depthwise convolution on the depthwise datapath (in_c == out_c channels)
POOL_NONE, POOL_MAX, POOL_AVG = 0, 1, 2
POOL_CODES = {"none": POOL_NONE, "max": POOL_MAX, "avg": POOL_AVG}
# A depthwise layer with this pool code reads its input upsampled (nearest neighbour) by
# pool_k_h x pool_k_w: a 1x1 copy whose conv and output maps are the upsampled map.
POOL_UPSAMPLE = 3
WORD_BITS = 32


class DescriptorError(StriateError):
    """A descriptor field value does not fit its declared width."""


def _bits(width: int, signed: bool = False):
    return field(default=0, metadata={"bits": width, "signed": signed})


class _Packed:
    """Fields that declare their bit widths, packed in declaration order from bit 0 upwards
    into ``WORDS`` 32-bit words (least significant first)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, width, signed = getattr(self, f.name), f.metadata["bits"], f.metadata["signed"]
            lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
            if not isinstance(value, int) or not lo <= value <= hi:
                raise DescriptorError(
                    f"descriptor field {f.name} must be an integer in [{lo}, {hi}], not {value!r}")

    @classmethod
    def fields_layout(cls) -> list[tuple[str, int, bool]]:
        """``(name, bits, signed)`` per field, in packing order."""
        return [(f.name, f.metadata["bits"], f.metadata["signed"]) for f in dataclasses.fields(cls)]

    @classmethod
    def bits(cls, name: str) -> int:
        """The width of field ``name``."""
        return next(bits for field, bits, _ in cls.fields_layout() if field == name)

    @classmethod
    def total_bits(cls) -> int:
        return sum(bits for _, bits, _ in cls.fields_layout())

    def to_int(self) -> int:
        value, pos = 0, 0
        for name, bits, _ in self.fields_layout():
            value |= (getattr(self, name) & ((1 << bits) - 1)) << pos
            pos += bits
        return value

    @classmethod
    def from_int(cls, value: int) -> "_Packed":
        values, pos = {}, 0
        for name, bits, signed in cls.fields_layout():
            v = (value >> pos) & ((1 << bits) - 1)
            if signed and v >> (bits - 1):
                v -= 1 << bits
            values[name] = v
            pos += bits
        return cls(**values)

    def to_words(self) -> list[int]:
        v = self.to_int()
        return [(v >> (WORD_BITS * i)) & 0xFFFF_FFFF for i in range(self.WORDS)]

    @classmethod
    def from_words(cls, words) -> "_Packed":
        words = list(words)
        if len(words) != cls.WORDS:
            raise DescriptorError(f"a descriptor must be {cls.WORDS} words, not {len(words)}")
        return cls.from_int(sum(int(w) << (WORD_BITS * i) for i, w in enumerate(words)))



@dataclass(frozen=True)
class LayerDescriptor(_Packed):
    """One layer as the sequencer executes it. Sizes are in elements, addresses in bytes.

    The layer reads ``in_c x in_h x in_w`` from the activation memory at ``in_addr``,
    convolves (``op == OP_CONV``) with ``k_h x k_w`` weights at ``weight_addr`` and bias/requant
    parameters from entry ``param_addr`` on, producing ``out_c x conv_h x conv_w``, clamps to
    ``[act_lo, act_hi]``, pools (``pool``) to ``out_c x out_h x out_w`` and writes the other bank
    at ``out_addr``. An add (``op == OP_ADD``) reads the ``in_c x in_h x in_w`` maps at
    ``in_addr`` and ``in2_addr`` and writes their sum (``add_mult_a``, ``add_mult_b``,
    ``add_shift``, clamped to ``[act_lo, act_hi]``) at ``out_addr``; its other sizes are those of
    a 1x1 convolution that keeps the shape. A depthwise convolution (``op == OP_DW``) has the
    fields of a convolution whose output channel ``c`` reads input channel ``c`` only, with
    ``in_c == out_c``, no pooling and padding below the kernel (`AcceleratorConfig
    .depthwise_kernel`). A convolution with ``table`` > 0 maps each value
    ``v`` it writes to entry ``v + 128`` of table ``table - 1`` in the table memory.

    A convolution (``op == OP_CONV``) on a configuration with a partial-sum memory
    (`AcceleratorConfig.psum_entries`) may run in chunks of its input channels: with
    ``psum_in`` each conv pixel's sums start from the partial-sum memory's next entry instead
    of zero; with ``psum_out`` they go to the next entry instead of the requantizer, and the
    layer writes nothing. Entries are taken in the order the window generator emits conv
    pixels, the same for every chunk of one tile, so the last chunk (``psum_in`` only)
    requantizes, pools and writes the whole sums.

    With ``pair`` (`AcceleratorConfig.pixel_pairs`) a convolution of at most ``pe_out / 2``
    output channels at column stride 1 and with an even ``conv_w`` computes conv pixels
    ``2j`` and ``2j + 1`` of a row in one item, the upper half of the PE rows on the second:
    its walk has a pooling kernel one column wide at column stride 2 (``pool_k_w == 1``,
    ``pool_stride_w == 2``, ``out_w == conv_w / 2``). Without pooling (``pool == 0``, kernel
    and stride 1 in rows) it writes ``conv_w`` columns; with max pooling (``pool == 1``, any
    rows, not with the serial requantizer) a pair is one pooling window's two columns, merged
    by the pool, and it writes ``out_w`` columns.

    With ``merge`` (hardware with pixel pairs; a convolution without ``pair``) a convolution
    whose last input channel group holds at most ``pe_in / 2`` channels reads that group at
    even kernel columns ``kx`` only, each item taking the lower half of the lanes of column
    ``kx``'s word and of column ``kx + 1``'s (the next word, in the other RAM; zero where it
    pads or ``kx + 1 == k_w``). Its items per conv pixel are ``k_h * (k_w * groups - k_w //
    2)``, and its weights follow that order (`layout.pack_weights`).

    ``wait`` holds the layer back until no transfer (`MoveDescriptor`) runs; ``stamp`` records
    the cycle counter in the next LAYER_CYCLES word when the layer is done
    (`striate.sw.mapping.memmap`).
    """

    op: int = _bits(2)
    wait: int = _bits(1)        # start only when no transfer runs (`MoveDescriptor`)
    stamp: int = _bits(1)       # record the cycle counter when the layer is done
    pool: int = _bits(2)
    in_c: int = _bits(16)
    in_h: int = _bits(10)
    in_w: int = _bits(10)
    out_c: int = _bits(16)
    conv_h: int = _bits(10)
    conv_w: int = _bits(10)
    out_h: int = _bits(10)
    out_w: int = _bits(10)
    k_h: int = _bits(9)
    k_w: int = _bits(9)
    stride_h: int = _bits(3)
    stride_w: int = _bits(3)
    pad_h: int = _bits(3)
    pad_w: int = _bits(3)
    act_lo: int = _bits(8, signed=True)
    act_hi: int = _bits(8, signed=True)
    pool_k_h: int = _bits(10)
    pool_k_w: int = _bits(10)
    pool_stride_h: int = _bits(4)    # at most max_stride (a global pool's: `mapper.pool_stride`)
    pool_stride_w: int = _bits(4)
    pool_pad_h: int = _bits(3)
    pool_pad_w: int = _bits(3)
    pool_mult: int = _bits(31)
    pool_shift: int = _bits(6)
    in_addr: int = _bits(24)
    out_addr: int = _bits(24)
    weight_addr: int = _bits(26)
    param_addr: int = _bits(16)
    in2_addr: int = _bits(24)
    add_mult_a: int = _bits(ADD_MULT_BITS)
    add_mult_b: int = _bits(ADD_MULT_BITS)
    add_shift: int = _bits(ADD_SHIFT_BITS)
    table: int = _bits(6)       # 0: none; t: look values up in table t - 1 as they are written
    psum_in: int = _bits(1)     # add each conv pixel's partial sums to its first item
    psum_out: int = _bits(1)    # write each conv pixel's sums to the partial-sum memory
    pair: int = _bits(1)        # two neighbouring output pixels an item (`AcceleratorConfig
    #                             .pixel_pairs`): out_w and pool_stride_w count pairs
    merge: int = _bits(1)       # the last input channel group's lanes merged across kernel
    #                             column pairs (`AcceleratorConfig.pixel_pairs`)

LayerDescriptor.WORDS = -(-LayerDescriptor.total_bits() // WORD_BITS)


MOVE_TARGETS = {"program": 1, "params": 2, "weights": 3, "act": 4, "tables": 5}


@dataclass(frozen=True)
class MoveDescriptor(_Packed):
    """One transfer between the external memory and an on-chip memory, run by the DMA engine
    (`striate.hw.core.dma`) beside the layers. Addresses, lengths and strides are in bytes.

    ``count`` chunks of ``length`` bytes move: chunk ``i`` from external byte ``ext_addr + i *
    ext_stride`` to byte ``local_addr + i * local_stride`` of the on-chip memory ``target``
    (`MOVE_TARGETS`, the host bus regions of `striate.sw.mapping.memmap`), or the other way with
    ``store`` (from the activation memory only). ``wait`` holds the transfer back until no
    layer runs; ``stamp`` records the cycle counter when it is done, as a layer's does. A
    transfer into the program memory is waited for before the next descriptor is fetched.
    """

    op: int = _bits(2)          # OP_MOVE
    wait: int = _bits(1)
    stamp: int = _bits(1)
    store: int = _bits(1)
    target: int = _bits(3)
    ext_addr: int = _bits(32)
    local_addr: int = _bits(26)
    length: int = _bits(24)
    count: int = _bits(16)
    ext_stride: int = _bits(32)
    local_stride: int = _bits(26)


MoveDescriptor.WORDS = LayerDescriptor.WORDS
assert MoveDescriptor.total_bits() <= 32 * MoveDescriptor.WORDS


def from_words(words):
    """The descriptor that program memory ``words`` hold: a `MoveDescriptor` for op
    `OP_MOVE`, else a `LayerDescriptor`."""
    words = list(words)
    kind = MoveDescriptor if words and int(words[0]) & 3 == OP_MOVE else LayerDescriptor
    return kind.from_words(words)
