"""Row bands (`striate.sw.mapping.bands`): every band of a layer, run alone on its input rows,
gives the layer's output rows (the golden model on both)."""

import numpy as np
import pytest

from striate.sw.golden.model import run_layer
from striate.sw.mapping import bands

from rtl_cases import random_inputs, random_layer


def check_bands(layer, x, count, depthwise=False):
    whole = run_layer(layer, x)
    parts = bands.split(layer, count, depthwise)
    assert [b.rows for b in parts] == [(o, min(o + count, layer.out_shape[1]))
                                       for o in range(0, layer.out_shape[1], count)]
    for b in parts:
        a, stop = b.in_rows
        got = run_layer(b.layer, np.ascontiguousarray(x[:, :, a:stop]))
        np.testing.assert_array_equal(got[:, :, b.skip:b.skip + b.count],
                                      whole[:, :, b.rows[0]:b.rows[1]])
        assert 0 <= b.layer.padding[0] <= bands.MAX_PAD
    return parts


@pytest.mark.parametrize("seed", range(60))
def test_random_layers_split_into_any_bands(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 6)), int(rng.integers(3, 24)), int(rng.integers(3, 12)))
    layer = random_layer(rng, shape, max_channels=6)
    x = random_inputs(rng, 2, shape)
    for count in sorted({1, 2, 3, int(rng.integers(1, layer.out_shape[1] + 1))}):
        try:
            check_bands(layer, x, count)
        except bands.MappingError:
            # only a global pool (its window is the whole map) may refuse rows apart
            assert layer.pool != "none" and layer.out_shape[1] == 1, (layer, count)


def test_a_middle_band_reads_the_rows_around_it_and_pads_nothing():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, (3, 20, 8)).replace(
        weight=rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), padding=(1, 1),
        stride=(1, 1), pool="none", out_shape=(4, 20, 8), bias=np.zeros(4, np.int32),
        mult=np.full(4, 1 << 30), shift=np.full(4, 38), pool_kernel=(1, 1),
        pool_stride=(1, 1), pool_padding=(0, 0), table=None)
    middle = bands.band(layer, 5, 9)
    assert middle.in_rows == (4, 10) and middle.layer.padding == (0, 1) and middle.skip == 0
    top = bands.band(layer, 0, 4)
    assert top.in_rows == (0, 5) and top.layer.padding == (1, 1) and top.skip == 0


@pytest.mark.parametrize("factors", [(2, 2), (3, 1), (1, 3), (2, 3)])
def test_upsampling_bands_are_rows_of_the_upsampled_map(factors):
    rng = np.random.default_rng(sum(factors))
    c, h, w = 5, 7, 4
    layer = random_layer(rng, (c, h, w)).replace(
        weight=np.eye(c, dtype=np.int8)[:, :, None, None], bias=np.zeros(c, np.int32),
        mult=np.full(c, 1 << 30), shift=np.full(c, 31), stride=(1, 1), padding=(0, 0),
        pool="none", pool_kernel=(1, 1), pool_stride=(1, 1), pool_padding=(0, 0), table=None,
        groups=c, upsample=factors, out_shape=(c, h * factors[0], w * factors[1]), lo=-128,
        hi=127)
    x = random_inputs(rng, 2, (c, h, w))
    for count in (factors[0], 2 * factors[0], 3 * factors[0] + (factors[0] > 1)):
        parts = check_bands(layer, x, count) if count % factors[0] == 0 else None
        if parts:
            assert all(b.layer.out_shape[1:] == (b.layer.in_shape[1] * factors[0],
                                                  w * factors[1]) for b in parts)
