"""The numerics contract: the one definition of striate's integer arithmetic.

Everything that computes, checks or generates integer arithmetic (compiler, golden model,
hardware tests, hardware widths) imports it from here.

Tensors
-------
* Weights: int8 in ``[-127, 127]``, symmetric, one scale per output channel, zero point 0.
* Activations: int8 in ``[-128, 127]``, one scale per tensor, zero point 0.
* Bias: int32 at scale ``s_in * s_w[c]``.
* Accumulators: int32. The compiler proves ``K * max|w| * max|x| + max|bias| < 2**31``
  per output channel (`accumulator_bound`), so no accumulation can overflow.

Requantization (one rounding)
-----------------------------
``y = clamp((acc * M + (1 << (S - 1))) >> S, lo, hi)`` where ``M`` is an integer in
``[1, 2**31 - 1]`` (`MULT_BITS` = 31 bits, unsigned), ``S`` is in ``[SHIFT_MIN, SHIFT_MAX]``
and ``>>`` is an arithmetic (flooring) shift. The product ``acc * M`` needs 63 bits; with the
rounding constant it still fits a signed 64-bit integer. Ties round towards +infinity:

>>> import numpy as np
>>> half = 1 << 30                      # M / 2**S = 0.5 with S = 31
>>> requantize(np.array([1, 3, -1, -3, -5]), half, 31).tolist()   # 0.5 1.5 -0.5 -1.5 -2.5
[1, 2, 0, -1, -2]
>>> requantize(np.array([1000, -1000]), half, 31).tolist()        # saturates
[127, -128]
>>> requantize(np.array([-7, 7, 300]), half, 31, lo=0, hi=100).tolist()  # fused ReLU, lowered hi
[0, 4, 100]

The residual add of two int8 tensors at scales ``s_a`` and ``s_b`` into one at ``s_out`` also rounds
once: ``y = clamp((a * M_a + b * M_b + (1 << (S - 1))) >> S, lo, hi)`` with 16-bit multipliers
``M_a ~ s_a / s_out * 2**S`` and ``M_b ~ s_b / s_out * 2**S`` (`add_multipliers`, `add`).

Multipliers are derived from a positive real scale by `quantize_multiplier`, which returns a
normalized ``M`` in ``[2**30, 2**31 - 1]``:

>>> quantize_multiplier(0.5)
(1073741824, 31)
>>> quantize_multiplier(0.1)
(1717986918, 34)
>>> quantize_multiplier(1 / 9)          # 3x3 average pool
(1908874354, 34)
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import QuantizationError

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127                # weights are symmetric: [-127, 127]
ACC_BITS = 32
ACC_MIN, ACC_MAX = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
MULT_BITS = 31                  # M is unsigned, 1 <= M < 2**31
SHIFT_BITS = 6
SHIFT_MIN, SHIFT_MAX = 1, 62    # S >= 1 so the rounding constant exists; 62 keeps it in int64


def quantize_multiplier(real_scale: float) -> tuple[int, int]:
    """Return ``(M, S)`` with ``M * 2**-S`` the closest such value to ``real_scale``.

    ``M`` is normalized to ``[2**30, 2**31 - 1]`` so it keeps 31 significant bits; ``S`` is in
    ``[SHIFT_MIN, SHIFT_MAX]``, so representable scales are about ``[2**-32, 2**30)``.
    Raises `QuantizationError` for a scale that is not finite and positive or out of range.
    """
    if not (math.isfinite(real_scale) and real_scale > 0):
        raise QuantizationError(f"requantization scale must be finite and > 0, not {real_scale!r}")
    mantissa, exponent = math.frexp(real_scale)         # real = mantissa * 2**exponent
    mult = round(mantissa * (1 << MULT_BITS))           # in [2**30, 2**31]
    if mult == 1 << MULT_BITS:
        mult //= 2
        exponent += 1
    shift = MULT_BITS - exponent
    if not SHIFT_MIN <= shift <= SHIFT_MAX:
        raise QuantizationError(
            f"requantization scale must be in [2**-{SHIFT_MAX - MULT_BITS + 1}, "
            f"2**{MULT_BITS - SHIFT_MIN}), not {real_scale!r}")
    return mult, shift


def requant_multiplier(real_scale: float) -> tuple[int, int]:
    """`quantize_multiplier` for a requantization of int32 accumulators to int8, with scales
    outside its range taken to the range's ends: that changes no result. Below ``2**-32``
    every ``|acc| < 2**31`` rounds to 0 at either scale; from ``2**30`` on every nonzero
    accumulator saturates at either scale.

    >>> requant_multiplier(1e-12)
    (1073741824, 62)
    >>> int(requantize(np.array([ACC_MAX]), *requant_multiplier(1e-12))[0])
    0
    >>> requantize(np.array([0, 1, -1]), *requant_multiplier(1e12)).tolist()
    [0, 127, -128]
    """
    try:
        return quantize_multiplier(real_scale)
    except QuantizationError:
        if not (math.isfinite(real_scale) and real_scale > 0):
            raise
    if real_scale < 1:
        return 1 << (MULT_BITS - 1), SHIFT_MAX
    return (1 << MULT_BITS) - 1, SHIFT_MIN


def requantize(acc, mult, shift, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """Apply the contract's single rounding and clamp; return int8.

    ``acc`` is an integer array (int32 range); ``mult`` and ``shift`` are scalars or arrays that
    broadcast against it (per channel: shape ``(C, 1, 1)`` for ``C x H x W`` maps).
    """
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    rounded = np.asarray(acc * mult)          # in place from here on: one temporary
    rounded += np.left_shift(np.int64(1), shift - 1)
    rounded >>= shift
    return np.clip(rounded, lo, hi, out=rounded).astype(np.int8)


FLOAT64_EXACT = 1 << 53   # every integer of smaller magnitude is a float64


def requantize_sums(acc: np.ndarray, bound: int, bias, mult, shift, lo: int = INT8_MIN,
                    hi: int = INT8_MAX) -> np.ndarray:
    """``requantize(acc + bias, mult, shift, lo, hi)`` for integer-valued float sums ``acc``
    (``... x C``, channels last; ``bias``, ``mult``, ``shift`` per channel) no larger in
    magnitude than ``bound``.

    In float64 when every channel's ``(bound + |bias|) * mult + 2**(shift-1) < 2**53``: then
    ``acc * (mult / 2**shift)`` and ``(bias * mult + 2**(shift-1)) / 2**shift`` are exact, so is
    their sum (an integer below 2**53 over a power of two), and its floor is the shift's;
    about half the time of the int64 arithmetic. Otherwise in int64, as `requantize`.
    """
    bias, mult, shift = (np.asarray(a, dtype=np.int64) for a in (bias, mult, shift))
    worst = max(((bound + abs(int(b))) * int(m) + (1 << (int(s) - 1))
                 for b, m, s in zip(bias, mult, shift)), default=0)
    if worst >= FLOAT64_EXACT:
        return requantize(acc.astype(np.int64) + bias, mult, shift, lo, hi)
    scale = np.ldexp(mult.astype(np.float64), -shift)
    offset = np.ldexp((bias * mult + (np.int64(1) << (shift - 1))).astype(np.float64), -shift)
    t = np.multiply(acc, scale)
    t += offset
    np.floor(t, out=t)
    return np.clip(t, lo, hi, out=t).astype(np.int8)


def quantize(x, scale: float, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """Quantize floats to int8 at ``scale``: ``clamp(floor(x / scale + 0.5), lo, hi)``.

    Ties round towards +infinity, like `requantize`:

    >>> quantize(np.array([0.25, -0.25, 0.75, 100.0]), 0.5).tolist()
    [1, 0, 2, 127]
    """
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.floor(x / scale + 0.5), lo, hi).astype(np.int8)


def accumulator_bound(fan_in: int, max_abs_weight, max_abs_input: int, max_abs_bias) -> np.ndarray:
    """Largest possible ``|acc|`` per output channel: ``K * max|w| * max|x| + max|bias|``.

    The layer is safe when every entry is ``< 2**31`` (see `fits_accumulator`):

    >>> int(accumulator_bound(25, 127, 128, 0)[0])
    406400
    >>> bool(fits_accumulator(accumulator_bound(133_000, 127, 128, 0)).all())
    False
    """
    w = np.atleast_1d(np.asarray(max_abs_weight, dtype=object))
    b = np.atleast_1d(np.asarray(max_abs_bias, dtype=object))
    return np.asarray(fan_in * w * int(max_abs_input) + b, dtype=object)


def fits_accumulator(bound) -> np.ndarray:
    """True where an `accumulator_bound` entry proves the int32 accumulator cannot overflow."""
    return np.asarray(bound, dtype=object) < (1 << (ACC_BITS - 1))


def max_abs_of_range(lo: int, hi: int) -> int:
    """Largest magnitude of an int8 value clamped to ``[lo, hi]``."""
    return max(abs(int(lo)), abs(int(hi)))


# -- residual add -------------------------------------------------------------------------------

ADD_MULT_BITS = 16              # M_a, M_b are unsigned, 0 <= M < 2**16
ADD_SHIFT_BITS = 5
ADD_SHIFT_MIN, ADD_SHIFT_MAX = 1, 31
ADD_RATIO_LIMIT = 2.0 ** (ADD_MULT_BITS - ADD_SHIFT_MIN)     # s_in / s_out must stay below it
ADD_RATIO_SAFE = ADD_RATIO_LIMIT / 2                         # what the compiler keeps to


def add_multipliers(ratio_a: float, ratio_b: float) -> tuple[int, int, int]:
    """``(M_a, M_b, S)`` for the sum of two int8 tensors at scales ``s_a``, ``s_b`` into one at
    ``s_out``, given ``ratio_a = s_a / s_out`` and ``ratio_b = s_b / s_out``.

    The larger ratio gets a multiplier normalized to ``[2**15, 2**16 - 1]`` (16 significant bits);
    the other shares its shift ``S`` in ``[ADD_SHIFT_MIN, ADD_SHIFT_MAX]``. A ratio of ``2**15``
    or more (an output range 32,768 times narrower than an input's: the two inputs cancel on
    the calibration data) raises `QuantizationError`.

    >>> add_multipliers(0.5, 0.25)
    (32768, 16384, 16)
    >>> add_multipliers(1.0, 0.3)
    (32768, 9830, 15)
    """
    for ratio in (ratio_a, ratio_b):
        if not (math.isfinite(ratio) and ratio > 0):
            raise QuantizationError(f"add input scale ratios must be finite and > 0, not "
                                    f"{ratio!r}")
    exponent = math.frexp(max(ratio_a, ratio_b))[1]      # max ratio = mantissa * 2**exponent
    shift = min(ADD_SHIFT_MAX, ADD_MULT_BITS - exponent)
    if shift < ADD_SHIFT_MIN:
        raise QuantizationError(
            f"add input scales must be less than 2**{ADD_MULT_BITS - ADD_SHIFT_MIN} times "
            f"the output scale, not {max(ratio_a, ratio_b):.6g} times (the inputs cancel on the "
            "calibration data)")
    top = (1 << ADD_MULT_BITS) - 1
    return (min(top, round(ratio_a * (1 << shift))), min(top, round(ratio_b * (1 << shift))),
            shift)


def add(a, b, mult_a: int, mult_b: int, shift: int, lo: int = INT8_MIN,
        hi: int = INT8_MAX) -> np.ndarray:
    """The residual add with one rounding: ``clamp((a * M_a + b * M_b + (1 << (S - 1))) >> S,
    lo, hi)``, as `requantize` rounds (ties towards +infinity); returns int8.

    >>> add(np.array([3, -3, 100]), np.array([1, -1, 100]), 32768, 16384, 16).tolist()
    [2, -2, 75]
    >>> add(np.array([-100]), np.array([20]), 32768, 32768, 15, lo=0).tolist()   # fused ReLU
    [0]
    """
    total = np.asarray(a, np.int64) * int(mult_a) + np.asarray(b, np.int64) * int(mult_b)
    return requantize(total, 1, shift, lo, hi)
