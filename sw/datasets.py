"""Real data that ships with an installed package (no download at run time).

`digits` is scikit-learn's copy of the UCI optical handwritten digits (1,797 grey 8x8 images of
the digits 0-9, pixel values 0..16, from 43 writers); `digit_rows` the same images as sequences
of rows, for 1-D nets.
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


def digit_rows(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The `digits` split as sequences: float32 ``N x 16 x 16`` signals whose 16 time steps are
    the image's rows and whose 16 features are a row's pixels (``N x C x L`` with ``C`` the
    columns), labels as `digits`.

    >>> x, y = digit_rows("test")
    >>> x.shape, y.shape
    ((360, 16, 16), (360,))
    """
    x, y = digits(split)
    return np.ascontiguousarray(x[:, 0].transpose(0, 2, 1)), y


#: Data sets by name: (the function giving a split, the input shape without N).
DATASETS = {"digits": (digits, (1, DIGITS_SIZE, DIGITS_SIZE)),
            "digit-rows": (digit_rows, (DIGITS_SIZE, DIGITS_SIZE))}


def load(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` of split ``split`` of data set ``name`` (`DATASETS`)."""
    if name not in DATASETS:
        raise StriateError(f"data set must be one of {sorted(DATASETS)}, not {name!r}")
    return DATASETS[name][0](split)
