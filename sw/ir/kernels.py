"""Array kernels shared by the float reference executor and the integer golden model."""

from __future__ import annotations

import numpy as np


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a window sweep along one axis (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel) // stride + 1


def windows(x: np.ndarray, kernel, stride, padding, pad_value=0,
            channels_last: bool = False) -> np.ndarray:
    """Return every ``kernel`` window of ``x`` (``N x C x H x W``) as ``N x C x OH x OW x KH x KW``;
    with ``channels_last``, of ``N x H x W x C`` as ``N x OH x OW x KH x KW x C``.

    A strided view of a padded copy; windows read ``pad_value`` outside the map.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    y = 1 if channels_last else 2              # the height axis; the width axis follows it
    if ph or pw:
        pads = [(0, 0)] * 4
        pads[y], pads[y + 1] = (ph, ph), (pw, pw)
        x = np.pad(x, pads, constant_values=pad_value)
    oh, ow = out_size(x.shape[y], kh, sh, 0), out_size(x.shape[y + 1], kw, sw, 0)
    s = x.strides
    if channels_last:
        n, _, _, c = x.shape
        shape, strides = (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1], s[2], s[3])
    else:
        n, c = x.shape[:2]
        shape, strides = (n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3])
    return np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)


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


FLOAT32_EXACT = 1 << 24   # every integer of smaller magnitude is a float32


def int_conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, extra=(0, 0),
               max_pool=None) -> np.ndarray:
    """Exact integer cross-correlation of int8 ``x`` (``N x C x H x W``) by integer ``weight``
    (as `conv2d`), as int64 ``N x OH x OW x O``: channels last. With ``max_pool = (kernel,
    stride)``, the maximum of each pooling window (no padding) of that."""
    return float_conv2d(x, weight, stride, padding, extra, max_pool)[0].astype(np.int64)


def float_conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, extra=(0, 0),
                 max_pool=None) -> tuple[np.ndarray, int]:
    """`int_conv2d`'s sums as integer-valued floats (float32 or float64, whichever the GEMM
    ran in), and ``bound``: no sum is larger in magnitude.

    Runs as one float GEMM over an im2col copy made in int8, channels last so that the copy
    moves runs of channels. Every partial sum of any summation order is an integer no larger
    than ``bound = max_o sum|w_o| * 128``; when that is below 2**24 the GEMM runs in float32,
    otherwise in float64, exact below 2**53 (the int32 accumulator bound guarantees that), so
    no order BLAS picks can round.
    """
    o, c, kh, kw = weight.shape
    w = np.asarray(weight).transpose(0, 2, 3, 1).reshape(o, kh * kw * c)    # ky, kx, c order
    bound = int(np.abs(w.astype(np.int64)).sum(axis=1).max(initial=0)) * 128
    dtype = np.float32 if bound < FLOAT32_EXACT else np.float64
    (ph, pw), (eh, ew) = padding, extra
    n, _, h, width = x.shape
    if ph or pw or eh or ew:
        padded = np.zeros((n, h + 2 * ph + eh, width + 2 * pw + ew, c), x.dtype)
        padded[:, ph:ph + h, pw:pw + width] = x.transpose(0, 2, 3, 1)
        x = padded
    else:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    view = windows(x, (kh, kw), stride, (0, 0), channels_last=True)  # N OH OW KH KW C
    oh, ow = view.shape[1:3]
    cols = np.ascontiguousarray(view).reshape(n * oh * ow, kh * kw * c)
    out = (cols.astype(dtype) @ w.T.astype(dtype)).reshape(n, oh, ow, o)
    if max_pool:
        out = max_pool_channels_last(out, *max_pool)
    return out, bound


def max_pool_channels_last(x: np.ndarray, kernel, stride) -> np.ndarray:
    """Maximum over every ``kernel`` window (no padding) of ``N x H x W x C`` ``x``.

    Over the window's rows first, then over its columns (a window's maximum is the maximum of
    its rows' maxima), each as one element-wise maximum per offset: kh + kw passes, the first
    over whole rows, instead of a reduction over strided window axes."""
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = out_size(x.shape[1], kh, sh, 0), out_size(x.shape[2], kw, sw, 0)
    rows = x[:, 0:(oh - 1) * sh + 1:sh].copy()                     # N OH W C
    for ky in range(1, kh):
        np.maximum(rows, x[:, ky:ky + (oh - 1) * sh + 1:sh], out=rows)
    out = rows[:, :, 0:(ow - 1) * sw + 1:sw].copy()                # N OH OW C
    for kx in range(1, kw):
        np.maximum(out, rows[:, :, kx:kx + (ow - 1) * sw + 1:sw], out=out)
    return out


def max_pool(x: np.ndarray, kernel, stride, padding, pad_value) -> np.ndarray:
    return windows(x, kernel, stride, padding, pad_value).max(axis=(4, 5))


def sum_pool(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Window sums (zero padding counted, as PyTorch's ``count_include_pad=True``)."""
    return windows(x, kernel, stride, padding, 0).sum(axis=(4, 5))
