"""The integer graph: a chain of `QLayer` objects, the compiler's output IR and the golden
model's input.

Each `QLayer` computes, on an int8 ``N x C x H x W`` input reshaped to ``in_shape``:

1. ``t``: for ``op == "conv"``, ``requantize(conv(x, weight) + bias, mult[c], shift[c], lo, hi)``;
   for ``op == "pool"``, ``clip(x, lo, hi)``.
2. the pooling stage on ``t``: ``"none"`` passes it on; ``"max"`` takes window maxima (padding
   reads -128); ``"avg"`` sums windows in int32 (padding reads 0) and applies
   ``requantize(sum, pool_mult, pool_shift, lo, hi)`` with ``s_in / (kh * kw * s_out)`` folded in.

``op == "flatten"`` only reshapes (``C x H x W`` -> ``C*H*W x 1 x 1`` in PyTorch's order). A linear
layer is a ``conv`` on a ``1 x 1`` map. After the compiler's passes a graph holds only ``conv``
and ``pool`` layers, each of which maps onto one hardware descriptor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import numerics

OPS = ("conv", "pool", "flatten")
POOLS = ("none", "max", "avg")


@dataclass(frozen=True, eq=False)
class QLayer:
    """One integer layer. Arrays: ``weight`` int8 ``O x C x KH x KW``, ``bias`` int32 ``O``,
    ``mult`` (31-bit) and ``shift`` per output channel as int64 ``O``."""

    name: str
    op: str
    in_shape: tuple
    out_shape: tuple
    out_scale: float
    sources: tuple = ()
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    mult: np.ndarray | None = None
    shift: np.ndarray | None = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    lo: int = numerics.INT8_MIN
    hi: int = numerics.INT8_MAX
    pool: str = "none"
    pool_kernel: tuple = (1, 1)
    pool_stride: tuple = (1, 1)
    pool_padding: tuple = (0, 0)
    pool_mult: int = 0
    pool_shift: int = 0

    def replace(self, **changes) -> "QLayer":
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Raise `StriateError` unless arrays and geometry agree (used on loaded programs)."""
        from ..errors import StriateError
        if self.op not in OPS or self.pool not in POOLS:
            raise StriateError(f"layer '{self.name}': op/pool must be in {OPS}/{POOLS}, "
                               f"not {self.op!r}/{self.pool!r}")
        if self.op != "conv":
            return
        o, c = self.out_shape[0], self.in_shape[0]
        want = {"weight": (o, c) + tuple(self.weight.shape[2:]), "bias": (o,), "mult": (o,),
                "shift": (o,)}
        for name, shape in want.items():
            if tuple(getattr(self, name).shape) != shape:
                raise StriateError(f"layer '{self.name}': {name} must have shape {shape}, "
                                   f"not {tuple(getattr(self, name).shape)}")
        if not (np.all(self.mult >= 1) and np.all(self.mult < 1 << numerics.MULT_BITS)
                and np.all(self.shift >= numerics.SHIFT_MIN)
                and np.all(self.shift <= numerics.SHIFT_MAX)):
            raise StriateError(f"layer '{self.name}': requantization parameters out of range")

    @property
    def kernel(self) -> tuple:
        return tuple(self.weight.shape[2:]) if self.weight is not None else (1, 1)

    @property
    def conv_shape(self) -> tuple:
        """``O x OH x OW`` after the convolution stage, before pooling."""
        if self.op != "conv":
            return self.in_shape
        from .kernels import out_size
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return (self.weight.shape[0], out_size(self.in_shape[1], kh, sh, ph),
                out_size(self.in_shape[2], kw, sw, pw))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolution stage per image."""
        if self.op != "conv":
            return 0
        o, oh, ow = self.conv_shape
        return o * oh * ow * int(np.prod(self.weight.shape[1:]))


@dataclass(frozen=True, eq=False)
class QGraph:
    """A chain of integer layers with the scales that connect it to floats."""

    layers: tuple
    input_shape: tuple          # C x H x W of one image
    input_scale: float
    output_shape: tuple         # logical shape of one output (e.g. (10,) after a classifier)
    input_im2col: tuple = ()    # (kh, kw, sh, sw, ph, pw): the host unfolds input windows

    def replace(self, **changes) -> "QGraph":
        return dataclasses.replace(self, **changes)

    @property
    def output_scale(self) -> float:
        return self.layers[-1].out_scale if self.layers else self.input_scale
