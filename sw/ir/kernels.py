"""Array kernels shared by the float reference executor and the integer golden model."""

from __future__ import annotations

import numpy as np


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a window sweep along one axis (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel) // stride + 1


def windows(x: np.ndarray, kernel, stride, padding, pad_value=0) -> np.ndarray:
    """Return every ``kernel`` window of ``x`` (``N x C x H x W``) as ``N x C x OH x OW x KH x KW``.

    A strided view of a padded copy; windows read ``pad_value`` outside the map.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(n, c, oh, ow, kh, kw),
        strides=(s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3]), writeable=False)


def conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, extra=(0, 0)) -> np.ndarray:
    """Cross-correlation in float64, ``N x C x H x W`` by ``O x C x KH x KW`` -> ``N x O x OH x OW``,
    zero padding ``padding`` on every side and ``extra`` more rows and columns at the bottom
    and right.

    With integer-valued operands this is exact as long as the sum of absolute products stays
    below 2**53, which the int32 accumulator bound guarantees by a wide margin.
    """
    o, c, kh, kw = weight.shape
    x = np.asarray(x, dtype=np.float64)
    if any(extra):
        x = np.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    cols = windows(x, (kh, kw), stride, padding)
    n, _, oh, ow = cols.shape[:4]
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    out = cols @ np.asarray(weight, dtype=np.float64).reshape(o, c * kh * kw).T
    return out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)


def max_pool(x: np.ndarray, kernel, stride, padding, pad_value) -> np.ndarray:
    return windows(x, kernel, stride, padding, pad_value).max(axis=(4, 5))


def sum_pool(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Window sums (zero padding counted, as PyTorch's ``count_include_pad=True``)."""
    return windows(x, kernel, stride, padding, 0).sum(axis=(4, 5))
