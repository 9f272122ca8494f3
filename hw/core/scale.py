"""The contract's rounding shift and clamp, and a shift-add multiplier for parts without spare
DSP blocks.

`round_clamp` computes ``clamp((p + 2**(s-1)) >> s, lo, hi)`` for a 64-bit product without a
full 64-bit barrel shifter: the result is clamped to int8, so only a 16-bit window of the
product and whether the bits above it are sign bits matter.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...sw.ir import numerics
from ...sw.golden.cycles import serial_scale_cycles, serial_scale_digits

BIASED = signed(33)      # an int32 sum plus an int32 bias
PRODUCT = signed(64)     # BIASED * the 31-bit multiplier, and pool sums * multiplier
WINDOW = 16              # product bits kept after the coarse (multiple of 8) shift


def _all_sign(value, j, sign):
    """Bits ``j`` and up of ``value`` all equal ``sign`` (a balanced reduction, not a chain)."""
    if j >= len(value):
        return Const(1, 1)
    return (value[j:] ^ sign.replicate(len(value) - j)) == 0


def _saturate(value, sign, fits, bits):
    """``value`` (low bits) if ``fits``, else the extreme of ``bits`` signed bits for ``sign``."""
    extreme = Mux(sign, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return Mux(fits, value[:bits].as_signed(), extreme)


def round_clamp(product, shift, lo, hi):
    """``clamp(round_shift(product, shift), lo, hi)`` with ``1 <= shift <= 62`` (see
    `striate.sw.ir.numerics.requantize`), as ``clamp(((product >> (shift-1)) + 1) >> 1)``.

    ``q = product >> (shift - 1)`` is only needed saturated to 10 signed bits: a coarse shift by
    ``8 * ((shift-1) >> 3)`` keeps 16 bits and whether the bits above are all sign bits (if not,
    ``|q| >= 2**15 / 2**7``, which rounds to at least 128 in magnitude and clamps anyway), then
    a fine shift by ``(shift-1) & 7``. `coarse_shift` and `fine_clamp` are the two halves, for
    a register between them.
    """
    return fine_clamp(*coarse_shift(product, shift), lo, hi)


PART = 17      # partial product operand bits: unsigned 17 (or the top, signed) fits 18 x 18


def split_product(m, a, b, name: str):
    """``a * b`` (``a`` signed, ``b`` unsigned) one cycle later, for
    `AcceleratorConfig.split_products`: the products of their `PART`-bit slices (one
    MULT18X18D each on the ECP5; ``a``'s top slice signed) registered in ``m``'s sync domain,
    and the expression summing them. The caller calls it under its pipeline's enable."""
    total = 0
    for i in range(0, len(a), PART):
        a_part = a[i:i + PART].as_signed() if i + PART >= len(a) else a[i:i + PART]
        for k in range(0, len(b), PART):
            product = a_part * b[k:k + PART]
            part = Signal(product.shape(), name=f"{name}_{i}_{k}", reset_less=True)
            m.d.sync += part.eq(product)
            total = total + (part << (i + k))
    return total


def staged_round_clamp(m, product, shift, lo, hi, stages: int, name: str):
    """`round_clamp` with ``stages`` (`AcceleratorConfig.round_stages`, 0 to 2) registers in
    ``m``'s sync domain: after `coarse_shift`, then after `fine_shift`. The caller calls it
    under its pipeline's enable, and ``lo`` and ``hi`` must hold while a value is inside."""
    window, fits, sign, fine = coarse_shift(product, shift)
    if stages >= 1:
        held = (Signal(WINDOW, name=f"{name}_window", reset_less=True),
                Signal(name=f"{name}_fits", reset_less=True),
                Signal(name=f"{name}_sign", reset_less=True),
                Signal(3, name=f"{name}_fine", reset_less=True))
        m.d.sync += [h.eq(v) for h, v in zip(held, (window, fits, sign, fine))]
        window, fits, sign, fine = held
    q = fine_shift(window, fits, sign, fine)
    if stages >= 2:
        held = Signal(signed(10), name=f"{name}_q", reset_less=True)
        m.d.sync += held.eq(q)
        q = held
    return round_half(q, lo, hi)


def coarse_shift(product, shift):
    """The first half of `round_clamp`: (16-bit window, its bits above are sign bits, sign,
    fine shift)."""
    t = (shift - 1).as_unsigned()[:6]
    coarse, fine = t[3:6], t[0:3]
    sign = product[-1]
    ext = Cat(product, *([sign] * (8 * 7 + WINDOW - len(product))))
    window = Array([ext[8 * c:8 * c + WINDOW] for c in range(8)])[coarse]
    fits = Array([_all_sign(product, 8 * c + WINDOW - 1, sign) for c in range(8)])[coarse]
    return window, fits, sign, fine


def fine_clamp(window, fits, sign, fine, lo, hi):
    """The second half of `round_clamp`: `fine_shift`, then `round_half`."""
    return round_half(fine_shift(window, fits, sign, fine), lo, hi)


def fine_shift(window, fits, sign, fine):
    """``q = product >> (shift - 1)`` saturated to 10 signed bits, from `coarse_shift`."""
    shifted = window.as_signed() >> fine                 # 16 bits, arithmetic
    return _saturate(_saturate(shifted, sign, _all_sign(shifted, 9, sign), 10), sign, fits, 10)


def round_half(q, lo, hi):
    """``clamp((q + 1) >> 1, lo, hi)``: the last rounding step and the clamp."""
    y = (q + 1) >> 1                                     # 10-bit signed, in [-256, 255]
    return Mux(y < lo, lo, Mux(y > hi, hi, y))


class SerialScale(wiring.Component):
    """``y = round_clamp(x * mult, shift, lo, hi)`` on a right-shifting shift-add multiplier.

    A ``start`` pulse latches the operands; each cycle then adds ``x`` times the next ``bits``
    bits of ``mult`` to the high half of the product and shifts the finished low bits out into
    the low half, so the adders are only as wide as ``x``. The rounding shift and clamp take
    three more cycles (`coarse_shift`, `fine_shift`, `round_half`: short paths for small
    parts' clocks). ``y`` is valid with the ``done`` pulse `cycles` cycles after ``start``.
    """

    def __init__(self, bits: int, x_bits: int = BIASED.width):
        self.bits, self.x_bits = bits, x_bits
        self.digits = serial_scale_digits(bits)
        self.cycles = serial_scale_cycles(bits)
        super().__init__({
            "start": In(1), "x": In(signed(x_bits)), "mult": In(numerics.MULT_BITS),
            "shift": In(numerics.SHIFT_BITS), "lo": In(signed(8)), "hi": In(signed(8)),
            "y": Out(signed(8)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        k = self.bits
        x = Signal(signed(self.x_bits))
        mult = Signal(self.digits * k)
        high = Signal(signed(self.x_bits + k + 1))   # product >> (k * digits done)
        low = Signal(self.digits * k)                # the product's finished low bits
        shift = Signal(numerics.SHIFT_BITS)
        count = Signal(range(self.cycles + 1))
        window, fits, sign, fine = Signal(WINDOW), Signal(), Signal(), Signal(3)
        q = Signal(signed(10))
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [x.eq(self.x), mult.eq(self.mult), shift.eq(self.shift), high.eq(0),
                         low.eq(0), count.eq(1)]
        with m.Elif(count == self.cycles - 2):
            product = Cat(low, high)[:PRODUCT.width].as_signed()
            m.d.sync += [Cat(window, fits, sign, fine).eq(Cat(*coarse_shift(product, shift))),
                         count.eq(count + 1)]
        with m.Elif(count == self.cycles - 1):
            m.d.sync += [q.eq(fine_shift(window, fits, sign, fine)), count.eq(count + 1)]
        with m.Elif(count == self.cycles):
            m.d.sync += [self.y.eq(round_half(q, self.lo, self.hi)),
                         self.done.eq(1), count.eq(0)]
        with m.Elif(count != 0):
            total = high + sum(Mux(mult[i], x << i, 0) for i in range(k))
            m.d.sync += [high.eq(total >> k), low.eq(Cat(low[k:], total[:k])),
                         mult.eq(mult >> k), count.eq(count + 1)]
        return m
