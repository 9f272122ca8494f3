"""Real data that ships with an installed package (no download at run time).

`digits` is scikit-learn's copy of the UCI optical handwritten digits (1,797 grey 8x8 images of
the digits 0-9, pixel values 0..16, from 43 writers).
"""

from __future__ import annotations

import numpy as np

from .errors import StriateError

DIGITS_SIZE = 16        # each 8x8 image is upsampled 2x (nearest neighbour) to 16x16
DIGITS_TEST_EVERY = 5   # images whose index is a multiple of 5 form the test split


def digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)`` of the handwritten-digits split ``"train"`` or ``"test"``.

    ``images`` is float32 ``N x 1 x 16 x 16`` in ``[0, 1]`` (pixel / 16, each pixel repeated 2x2),
    ``labels`` int64 ``N`` in ``0..9``. The split is fixed: image ``i`` of
    ``sklearn.datasets.load_digits()`` is in the test split when ``i % 5 == 0`` (360 images) and
    in the train split otherwise (1,437 images).

    >>> x, y = digits("test")
    >>> x.shape, y.shape, x.dtype, float(x.max())
    ((360, 1, 16, 16), (360,), dtype('float32'), 1.0)
    """
    if split not in ("train", "test"):
        raise StriateError(f"digits split must be 'train' or 'test', not {split!r}")
    from sklearn.datasets import load_digits
    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    images = images.repeat(2, axis=1).repeat(2, axis=2)[:, None]
    labels = data.target.astype(np.int64)
    test = np.arange(len(labels)) % DIGITS_TEST_EVERY == 0
    keep = test if split == "test" else ~test
    return np.ascontiguousarray(images[keep]), labels[keep]
