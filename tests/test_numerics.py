"""The numerics contract against plain Python integer arithmetic."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from striate import QuantizationError
from striate.sw.ir import numerics


def py_requantize(acc: int, mult: int, shift: int, lo: int, hi: int) -> int:
    # Python's // floors, which is exactly an arithmetic right shift.
    return min(hi, max(lo, (acc * mult + 2 ** (shift - 1)) // 2 ** shift))


@settings(max_examples=500, deadline=None)
@given(acc=st.integers(numerics.ACC_MIN, numerics.ACC_MAX),
       mult=st.integers(1, 2**31 - 1),
       shift=st.integers(numerics.SHIFT_MIN, numerics.SHIFT_MAX),
       lo=st.integers(-128, 0), hi=st.integers(0, 127))
def test_requantize_equals_python_integers(acc, mult, shift, lo, hi):
    got = numerics.requantize(np.array([acc]), mult, shift, lo, hi)
    assert got.dtype == np.int8
    assert int(got[0]) == py_requantize(acc, mult, shift, lo, hi)


def test_requantize_per_channel_broadcast():
    acc = np.array([[[10]], [[10]]])            # 2 channels x 1 x 1
    mult = np.array([1 << 30, 1 << 30])[:, None, None]
    shift = np.array([31, 32])[:, None, None]   # x0.5 and x0.25
    assert numerics.requantize(acc, mult, shift).ravel().tolist() == [5, 3]


@settings(max_examples=500, deadline=None)
@given(st.floats(2.0**-32, 2.0**29, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_is_normalized_and_accurate(real):
    mult, shift = numerics.quantize_multiplier(real)
    assert 2**30 <= mult < 2**31
    assert numerics.SHIFT_MIN <= shift <= numerics.SHIFT_MAX
    assert abs(mult * 2.0**-shift - real) <= real * 2.0**-31


@pytest.mark.parametrize("bad, message", [
    (0.0, "must be finite and > 0, not 0.0"),
    (-1.0, "must be finite and > 0, not -1.0"),
    (math.nan, "must be finite and > 0, not nan"),
    (2.0**31, r"must be in \[2\*\*-32, 2\*\*30\), not 2147483648.0"),
    (2.0**-40, r"must be in \[2\*\*-32, 2\*\*30\), not 9.094947017729282e-13"),
])
def test_quantize_multiplier_rejects(bad, message):
    with pytest.raises(QuantizationError, match=message):
        numerics.quantize_multiplier(bad)


def test_accumulator_bound_is_the_worst_case():
    # The bound is reached: all weights 127 against inputs -128 with the largest bias.
    k, w, x, b = 1000, 127, 128, 5
    worst = abs(k * 127 * -128) + 5
    assert int(numerics.accumulator_bound(k, w, x, b)[0]) == worst
    limit = (2**31 - 1 - 0) // (127 * 128)
    assert numerics.fits_accumulator(numerics.accumulator_bound(limit, 127, 128, 0)).all()
    assert not numerics.fits_accumulator(numerics.accumulator_bound(limit + 1, 127, 128, 0)).all()


def test_quantize_rounds_half_up_and_saturates():
    assert numerics.quantize(np.array([-0.5, 0.5, -1.5, 1000, -1000]), 1.0).tolist() == \
        [0, 1, -1, 127, -128]
