"""Element-wise non-linearities by table: the 256-entry int8 -> int8 lookup of the numerics
contract.

A layer with a table maps each int8 value ``v`` it would store to ``table[v + 128]`` after its
requantization, clamp and pooling. The compiler computes the table from the float function and
the two scales, ``table[v + 128] = quantize(f(v * s_in), s_out)``, so the integer result is the
float function of the dequantized input rounded once to the output scale: exact for the int8
input, with at most half an output step (``s_out / 2``) of error against ``f`` on it (plus
saturation where ``f`` leaves the output range). Any function of one value works, monotonic or
not. The float functions are PyTorch's own (float64), so calibration and tables see what the
model computes.

>>> t = table("tanh", {}, 4 / 127, 1 / 127)
>>> int(t[128 + 127]), int(t[128]), int(t[128 - 127])   # tanh(4), tanh(0), tanh(-4)
(127, 0, -127)
>>> monotonic(t), monotonic(table("silu", {}, 0.05, 0.05))
(True, False)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import numerics


def _call(fn):
    return lambda x, **options: fn(torch.from_numpy(np.asarray(x, np.float64)), **options)\
        .numpy()


#: Functions a table computes, by the name layers record, with their options' names.
FUNCTIONS = {
    "tanh": (_call(torch.tanh), ()),
    "sigmoid": (_call(torch.sigmoid), ()),
    "hardtanh": (_call(F.hardtanh), ("min_val", "max_val")),
    "hardsigmoid": (_call(F.hardsigmoid), ()),
    "hardswish": (_call(F.hardswish), ()),
    "silu": (_call(F.silu), ()),
    "leaky_relu": (_call(F.leaky_relu), ("negative_slope",)),
    "gelu": (_call(F.gelu), ("approximate",)),
    "elu": (_call(F.elu), ("alpha",)),
}

ENTRIES = 256       # one per int8 value, index ``v + 128``


def evaluate(name: str, options: dict, x: np.ndarray) -> np.ndarray:
    """The float function ``name`` with ``options`` on float64 ``x``."""
    return FUNCTIONS[name][0](x, **options)


def table(name: str, options: dict, s_in: float, s_out: float) -> np.ndarray:
    """The int8 table of ``name`` from input scale ``s_in`` to output scale ``s_out``."""
    v = np.arange(numerics.INT8_MIN, numerics.INT8_MAX + 1, dtype=np.float64)
    return numerics.quantize(evaluate(name, options, v * s_in), s_out)


def lookup(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[v + 128]`` for each int8 ``v`` of ``values``."""
    return table[values.astype(np.int64) - numerics.INT8_MIN]


def monotonic(table: np.ndarray) -> bool:
    """Whether the table never decreases: then it commutes with max pooling exactly."""
    return bool(np.all(np.diff(table.astype(np.int64)) >= 0))


def flat_beyond(name: str, options: dict, s_out: float, top: float, steps: int = 4096) -> float:
    """The smallest input magnitude ``c <= top`` beyond which ``name``'s table entries at output
    scale ``s_out`` no longer change on inputs up to ``top`` (both signs): where tanh, sigmoid
    and the hard functions saturate. ``top`` for a function that keeps changing.

    >>> round(flat_beyond("tanh", {}, 1 / 127, 10.0), 2)
    3.12
    >>> round(flat_beyond("silu", {}, 0.1, 10.0), 1)
    10.0
    """
    if not top > 0:
        return top
    xs = np.linspace(0.0, top, steps + 1)
    edge = 0.0
    for sign in (1.0, -1.0):
        q = numerics.quantize(evaluate(name, options, sign * xs), s_out)
        changes = np.nonzero(q[1:] != q[:-1])[0]
        if len(changes):
            edge = max(edge, float(xs[changes[-1] + 1]))
    return edge if edge > 0 else top
