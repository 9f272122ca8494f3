"""The integer graph: a DAG of `QLayer` nodes over named int8 tensors, the compiler's output IR
and the golden model's input.

Every layer writes one tensor, named after the layer, and reads the tensors its ``inputs`` name:
`INPUT` (the network input) or earlier layers. A tensor may feed several layers (fan-out); the
graph's ``output`` names the tensor the network returns. Layers are kept in a topological order,
so running them in order computes every input before it is read. A chain is the special case in
which each layer reads the one before it; layers built without ``inputs`` are chained that way.

Each `QLayer` computes, on int8 ``N x C x H x W`` inputs reshaped to its ``in_shape`` (a
convolution reads ``in_shape[0]`` channels of its input from ``channel_offset`` on: all of them,
or a slice for a part of a split grouped convolution):

1. ``t``: for ``op == "conv"``, ``requantize(conv(x, weight) + bias, mult[c], shift[c], lo, hi)``
   (zero padding ``padding`` on every side, ``pad_extra`` more at the bottom and right) of
   the input repeated ``upsample`` times along each axis (nearest-neighbour upsampling);
   for ``op == "pool"``, ``clip(x, lo, hi)``; for ``op == "add"`` (two inputs ``a``, ``b`` of one
   shape), ``requantize(a * add_mult[0] + b * add_mult[1], 1, add_shift, lo, hi)``
   (`numerics.add`).
2. the pooling stage on ``t`` (``conv`` and ``pool`` only): ``"none"`` passes it on; ``"max"``
   takes window maxima (padding reads -128); ``"avg"`` sums windows in int32 (padding reads 0)
   and applies ``requantize(sum, pool_mult, pool_shift, lo, hi)`` with
   ``s_in / (kh * kw * s_out)`` folded in.
3. with a ``table`` (``conv`` and ``pool`` only), each value ``v`` becomes ``table[v + 128]``
   (`tables.lookup`): an element-wise function by table.

``op == "concat"`` joins its inputs (same height and width, one scale) along channels;
``op == "flatten"`` only reshapes (``C x H x W`` -> ``C*H*W x 1 x 1`` in PyTorch's order). A
linear layer is a ``conv`` on a ``1 x 1`` map; a vector input of ``F`` features is an ``F x 1 x 1``
map. After the compiler's integer passes a graph holds only ``conv``, ``add`` and ``concat``
layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import numerics, tables

OPS = ("conv", "pool", "flatten", "add", "concat")
POOLS = ("none", "max", "avg")
INPUT = "@input"        # the network input's tensor name (no module path contains "@")


def map_shape(shape) -> tuple:
    """A tensor's ``C x H x W`` map: a signal of ``C x L`` is a ``C x 1 x L`` map, a vector of
    ``F`` features an ``F x 1 x 1`` map."""
    if len(shape) == 2:
        return (int(shape[0]), 1, int(shape[1]))
    return tuple(int(n) for n in shape) if len(shape) == 3 else (int(np.prod(shape)), 1, 1)


def kernel_taps(kernel: tuple, dilation: tuple) -> int:
    """Positions a ``KH x KW`` kernel (its span) dilated by ``(dh, dw)`` multiplies."""
    return ((kernel[0] - 1) // dilation[0] + 1) * ((kernel[1] - 1) // dilation[1] + 1)


def block_diagonal_mask(o: int, c: int, groups: int) -> np.ndarray:
    """``O x C`` booleans: where a grouped convolution's dense weights may be nonzero."""
    return (np.arange(o)[:, None] // (o // groups)) == (np.arange(c)[None, :] // (c // groups))


@dataclass(frozen=True, eq=False)
class QLayer:
    """One integer layer. Arrays: ``weight`` int8 ``O x C x KH x KW``, ``bias`` int32 ``O``,
    ``mult`` (31-bit) and ``shift`` per output channel as int64 ``O``. ``inputs`` name the
    tensors it reads (empty: the layer before it in its graph, or `INPUT`). A grouped (or
    depthwise) convolution of ``groups`` groups is stored as the dense convolution that
    computes the same, its weights zero where output and input channel groups differ."""

    name: str
    op: str
    in_shape: tuple
    out_shape: tuple
    out_scale: float
    sources: tuple = ()
    inputs: tuple = ()
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
    add_mult: tuple = (0, 0)
    add_shift: int = 0
    groups: int = 1         # a grouped convolution: ``weight`` is zero across groups
    dilation: tuple = (1, 1)    # a dilated one: ``weight`` spans it, zero between the taps
    table: np.ndarray | None = None     # int8 ``[256]``: `tables.lookup` after pooling
    pad_extra: tuple = (0, 0)   # 0 or 1 more zero row / column at the bottom / right
    upsample: tuple = (1, 1)    # read the input repeated (fh, fw) times (nearest neighbour)
    channel_offset: int = 0     # a conv's first input channel: it reads a slice of its input

    def replace(self, **changes) -> "QLayer":
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Raise `StriateError` unless arrays and geometry agree (used on loaded programs)."""
        from ..errors import StriateError
        if self.op not in OPS or self.pool not in POOLS:
            raise StriateError(f"layer '{self.name}': op/pool must be in {OPS}/{POOLS}, "
                               f"not {self.op!r}/{self.pool!r}")
        if self.table is not None:
            if self.op not in ("conv", "pool"):
                raise StriateError(f"layer '{self.name}': only convolution and pooling layers "
                                   f"may have a table, not a {self.op} layer")
            if self.table.shape != (tables.ENTRIES,) or self.table.dtype != np.int8:
                raise StriateError(f"layer '{self.name}': table must be {tables.ENTRIES} int8 "
                                   f"values, not {self.table.dtype} {self.table.shape}")
        if self.channel_offset and self.op != "conv" or \
                not isinstance(self.channel_offset, int) or self.channel_offset < 0:
            raise StriateError(f"layer '{self.name}': channel_offset must be an integer >= 0, "
                               f"and 0 unless the layer is a convolution, not "
                               f"{self.channel_offset!r} on a {self.op} layer")
        if self.op != "conv":
            return
        o, c = self.out_shape[0], self.in_shape[0]
        want = {"weight": (o, c) + tuple(self.weight.shape[2:]), "bias": (o,), "mult": (o,),
                "shift": (o,)}
        for name, shape in want.items():
            if tuple(getattr(self, name).shape) != shape:
                raise StriateError(f"layer '{self.name}': {name} must have shape {shape}, "
                                   f"not {tuple(getattr(self, name).shape)}")
        g = self.groups
        if g < 1 or o % g or c % g or np.any(self.weight[~block_diagonal_mask(o, c, g)]):
            raise StriateError(f"layer '{self.name}': groups must divide the {o} output and {c} "
                               f"input channels and the weights be zero across groups, not "
                               f"groups={self.groups}")
        if not all(isinstance(f, int) and f >= 1 for f in self.upsample):
            raise StriateError(f"layer '{self.name}': upsample factors must be integers >= 1, "
                               f"not {self.upsample}")
        if tuple(self.pad_extra) not in ((0, 0), (0, 1), (1, 0), (1, 1)):
            raise StriateError(f"layer '{self.name}': pad_extra must be 0 or 1 per axis, not "
                               f"{self.pad_extra}")
        dh, dw = self.dilation
        kh, kw = self.kernel
        dilated = _dilation_ok(dh, kh) and _dilation_ok(dw, kw)
        if dilated:
            between = np.ones((kh, kw), bool)
            between[::dh, ::dw] = False
            dilated = not np.any(self.weight[:, :, between])
        if not dilated:
            raise StriateError(f"layer '{self.name}': dilation must divide the {kh}x{kw} "
                               f"kernel's span and the weights be zero between its taps, not "
                               f"dilation={self.dilation}")
        if not (np.all(self.mult >= 1) and np.all(self.mult < 1 << numerics.MULT_BITS)
                and np.all(self.shift >= numerics.SHIFT_MIN)
                and np.all(self.shift <= numerics.SHIFT_MAX)):
            raise StriateError(f"layer '{self.name}': requantization parameters out of range")

    def reads(self, shape: tuple) -> bool:
        """The layer can read a tensor of ``shape``: its ``in_shape``, or for a convolution a
        map of its height and width with channels beyond ``channel_offset + in_shape[0]``."""
        if tuple(self.in_shape) == tuple(shape) and not self.channel_offset:
            return True
        if self.op != "conv" or len(shape) != 3:
            return False
        c, h, w = self.in_shape
        return tuple(shape[1:]) == (h, w) and self.channel_offset + c <= shape[0]

    @property
    def kernel(self) -> tuple:
        return tuple(self.weight.shape[2:]) if self.weight is not None else (1, 1)

    @property
    def taps(self) -> int:
        """Kernel positions the convolution's weights may use: ``KH * KW`` unless dilated."""
        return kernel_taps(self.kernel, self.dilation)

    @property
    def conv_shape(self) -> tuple:
        """``O x OH x OW`` after the convolution stage, before pooling."""
        if self.op != "conv":
            return self.in_shape if self.op == "pool" else self.out_shape
        from .kernels import out_size
        (kh, kw), (sh, sw), (ph, pw), (eh, ew) = self.kernel, self.stride, self.padding, \
            self.pad_extra
        h, w = (n * f for n, f in zip(self.in_shape[1:], self.upsample))
        return (self.weight.shape[0], out_size(h + eh, kh, sh, ph), out_size(w + ew, kw, sw, pw))

    @property
    def is_copy(self) -> bool:
        """A convolution with zero bias that sets each output value to one input value (at one
        channel and kernel offset) or to zero: 0/1 weights, at most one 1 per output channel.
        A clamp, pooling layer or requantizing copy lowered onto the convolution datapath
        (`passes.identity_conv`), a zero padding (`quantize`), or a copy that places a
        concatenation (`striate.sw.mapping.concat`)."""
        return self._selects and self.table is None

    @property
    def _selects(self) -> bool:
        """Zero bias and 0/1 weights with at most one 1 per output channel: the convolution
        stage only picks input values (a table after it may still change them)."""
        if self.op != "conv" or self.bias.any():
            return False
        w = self.weight.reshape(self.weight.shape[0], -1)
        return bool(np.isin(w, (0, 1)).all() and (w.sum(axis=1) <= 1).all())

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolution stage per image: the network's work, so 0
        for layers that only copy (`is_copy`, a table after the copy or not) or add."""
        if self.op != "conv" or self._selects:
            return 0
        o, oh, ow = self.conv_shape
        return o * oh * ow * self.weight.shape[1] // self.groups * self.taps


def _dilation_ok(dilation, span: int) -> bool:
    """A dilation a kernel of ``span`` positions can have: a positive integer dividing
    ``span - 1``."""
    return isinstance(dilation, int) and dilation >= 1 and (span - 1) % dilation == 0


@dataclass(frozen=True, eq=False)
class QGraph:
    """A DAG of integer layers in topological order, with the scales that connect it to floats.

    ``output`` names the tensor the network returns (empty: the last layer's). Layers without
    ``inputs`` read the layer before them (the first one `INPUT`), so a chain needs no names.
    """

    layers: tuple
    input_shape: tuple          # shape of one input: C x H x W, or F for a vector
    input_scale: float
    output_shape: tuple         # logical shape of one output (e.g. (10,) after a classifier)
    input_im2col: tuple = ()    # (kh, kw, sh, sw, ph, pw): the host unfolds input windows
    output: str = ""

    def __post_init__(self):
        layers, previous = [], INPUT
        for layer in self.layers:
            if not layer.inputs:
                layer = layer.replace(inputs=(previous,))
            layers.append(layer)
            previous = layer.name
        object.__setattr__(self, "layers", tuple(layers))
        if not self.output:
            object.__setattr__(self, "output", previous)

    def replace(self, **changes) -> "QGraph":
        return dataclasses.replace(self, **changes)

    @property
    def output_scale(self) -> float:
        return self.scale_of(self.output)

    def layer(self, name: str) -> QLayer:
        """The layer that writes tensor ``name``."""
        return next(layer for layer in self.layers if layer.name == name)

    def scale_of(self, name: str) -> float:
        return self.input_scale if name == INPUT else self.layer(name).out_scale

    def consumers(self, name: str) -> list:
        """Layers that read tensor ``name`` (a layer reading it twice counts once)."""
        return [layer for layer in self.layers if name in layer.inputs]

    def readers(self, name: str) -> int:
        """How many places read tensor ``name``: layers (each input counted) and the output."""
        return sum(layer.inputs.count(name) for layer in self.layers) + (name == self.output)

    @property
    def is_chain(self) -> bool:
        """Each layer reads exactly the tensor of the one before it (the first, the input)."""
        previous = INPUT
        for layer in self.layers:
            if layer.inputs != (previous,):
                return False
            previous = layer.name
        return self.output == previous

    def check_topology(self) -> str | None:
        """None if names are unique, every input is written before it is read and ``output``
        exists; else what is wrong, for an error message."""
        seen = {INPUT}
        for layer in self.layers:
            if layer.name in seen:
                return f"layer name '{layer.name}' is used twice"
            missing = [name for name in layer.inputs if name not in seen]
            if not layer.inputs or missing:
                return (f"layer '{layer.name}' reads "
                        f"{', '.join(repr(m) for m in missing) or 'nothing'}, which no earlier "
                        "layer writes")
            seen.add(layer.name)
        if self.output not in seen:
            return f"output {self.output!r} is no tensor of the graph"
        return None
