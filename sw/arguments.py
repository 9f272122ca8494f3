"""Checks of what users pass to the public API, and how a wrong value is shown in the
`StriateError` that names it."""

from __future__ import annotations

import numpy as np

from .errors import StriateError


def as_array(x) -> np.ndarray | None:
    """``x`` (NumPy, torch or nested sequences) as a NumPy array of real numbers (bool, integer
    or float); None when it is not one (ragged, strings, objects, complex)."""
    try:
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    except (ValueError, TypeError, RuntimeError):   # ragged, or a torch dtype NumPy lacks
        return None
    return a if a.dtype.kind in "biuf" else None


def dims(shape) -> str:
    """``2 x 1 x 16 x 16`` (``scalar`` for ``()``), for messages."""
    return " x ".join(map(str, shape)) or "scalar"


def dtype_of(x) -> str:
    """The element type of an array (``float32``), else the Python type of ``x``."""
    return str(x.dtype).removeprefix("torch.") if hasattr(x, "dtype") else type(x).__name__


def describe(x) -> str:
    """``x`` for a message: ``float32 2 x 1 x 16 x 16`` for an array, else its type."""
    return f"{dtype_of(x)} {dims(x.shape)}" if hasattr(x, "dtype") and hasattr(x, "shape") \
        else type(x).__name__


def check_flag(value, name: str) -> bool:
    """``value`` as a bool: True, False, NumPy bools, 0 and 1; else `StriateError`."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (int, np.integer)) \
            and value in (0, 1):
        return bool(value)
    raise StriateError(f"{name} must be True or False, not {value!r}")
