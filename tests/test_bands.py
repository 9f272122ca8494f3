"""Row bands and tiles (`striate.sw.mapping.bands`): every band or tile of a layer, run alone on
its input rows and columns, gives the layer's output rows and columns (the golden model on
both)."""

import numpy as np
import pytest

from striate.sw.golden.model import run_layer
from striate.sw.mapping import bands

from rtl_cases import random_inputs, random_layer


def check_bands(layer, x, count, depthwise=False, width=None):
    whole = run_layer(layer, x)
    parts = bands.split(layer, count, depthwise, width)
    _, oh, ow = layer.out_shape
    width = width or ow
    assert [(b.rows, b.cols) for b in parts] == [
        ((o, min(o + count, oh)), (c, min(c + width, ow)))
        for o in range(0, oh, count) for c in range(0, ow, width)]
    for b in parts:
        (a, stop), (left, right) = b.in_rows, b.in_cols
        got = run_layer(b.layer, np.ascontiguousarray(x[:, :, a:stop, left:right]))
        n = b.cols[1] - b.cols[0]
        np.testing.assert_array_equal(
            got[:, :, b.skip:b.skip + b.count, b.skip_col:b.skip_col + n],
            whole[:, :, b.rows[0]:b.rows[1], b.cols[0]:b.cols[1]])
        assert all(0 <= p <= bands.MAX_PAD for p in b.layer.padding)
        if depthwise:
            assert all(p < k for p, k in zip(b.layer.padding, b.layer.kernel))
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


@pytest.mark.parametrize("seed", range(60))
def test_random_layers_split_into_any_tiles_of_rows_and_columns(seed):
    rng = np.random.default_rng(1000 + seed)
    shape = (int(rng.integers(1, 6)), int(rng.integers(3, 16)), int(rng.integers(3, 24)))
    layer = random_layer(rng, shape, max_channels=6)
    x = random_inputs(rng, 2, shape)
    _, oh, ow = layer.out_shape
    for count, width in {(int(rng.integers(1, oh + 1)), w)
                         for w in (1, 2, 3, int(rng.integers(1, ow + 1)))}:
        try:
            check_bands(layer, x, count, width=width)
        except bands.MappingError:
            # only a global pool (its window is the whole map) may refuse columns apart
            assert layer.pool != "none" and 1 in layer.out_shape[1:], (layer, count, width)


def test_depthwise_tiles_keep_their_padding_below_the_kernel():
    rng = np.random.default_rng(7)
    c = 4
    for kernel, padding in (((3, 3), (1, 1)), ((3, 5), (1, 2)), ((2, 2), (1, 1))):
        weight = np.zeros((c, c, *kernel), np.int8)     # depthwise: the diagonal
        weight[np.arange(c), np.arange(c)] = rng.integers(-127, 128, (c, *kernel))
        layer = random_layer(rng, (c, 12, 14)).replace(weight=weight, groups=c,
            padding=padding, stride=(1, 1), pool="none", pool_kernel=(1, 1),
            pool_stride=(1, 1), pool_padding=(0, 0), table=None, bias=np.zeros(c, np.int32),
            mult=np.full(c, 1 << 30), shift=np.full(c, 36), pad_extra=(0, 0))
        layer = layer.replace(out_shape=(c, 12 + 2 * padding[0] - kernel[0] + 1,
                                         14 + 2 * padding[1] - kernel[1] + 1))
        x = random_inputs(rng, 2, (c, 12, 14))
        for count, width in ((1, 1), (2, 3), (5, 4)):
            check_bands(layer, x, count, depthwise=True, width=width)


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
