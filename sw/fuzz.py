"""Differential fuzzer: random PyTorch networks, compiled and run on the RTL, layer by layer.

Each case is an `nn.Module` built at random from what `docs/compiler.md` lists as supported
(modules and their functional forms, every option: kernels, strides, paddings incl. ``'same'``
and ``'valid'``, BatchNorm, clamps, max / average / global pooling, flatten and linear heads,
no-ops, residual blocks, concatenations of branches with any channel counts (nested, fanned
out, the input itself, one tensor twice), multilayer perceptrons on vectors, time-delay nets of
1-D layers on signals), with shapes up to the configuration's limits and now and then past them, random weights
and BatchNorm statistics, and calibration data over many decades of scale. A case is compiled
for one configuration and then checked:

* the golden model against the RTL (the Verilator backend) on every layer, ``np.array_equal``;
* the hardware cycle counters against the cycle model (equal, or at least it where the model
  says a stage may stall);
* a save / load round trip of the program file.

A compile that raises `MappingError` or `QuantizationError` is a refusal for a documented limit,
counted by reason; any other exception, a refusal of a supported layer included, is a failure.
Each case is reproducible from ``(config, seed, case)``, and each failure prints the command
that reruns it alone (`repro`).
"""

from __future__ import annotations

import re
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .golden import timeline
from .config import AcceleratorConfig, MemoryTiming
from .errors import MappingError, PlacementError, QuantizationError
from .ir.graph import map_shape
from .mapping.mapper import map_bytes

#: Configurations of the fuzzer's own: the default array (with external memory: what does not
#: fit on chip streams), a small one with a one-lane requantizer, a serial-requantizer one with
#: every option and the PE array's operands and products registered, one with a 4 x 4
#: depthwise window, a two-lane requantizer and its PE array's operands registered
#: (`AcceleratorConfig.mac_stages`; these three without external memory; the last two with
#: the rounding shifts' register stages, `AcceleratorConfig.round_stages`, as the narrow one,
#: and the last with `AcceleratorConfig.split_products`),
#: and the default array with small on-chip memories whose every case streams from external
#: memory in tiles (`STREAMED`), its layers' set-up overlapping the layer before as in the
#: default, and its 64 parameter entries splitting layers of more than 32 channels, depthwise
#: ones too, into spans of output channels (`ulx3s-sdram` streams every case with set-up
#: after it); and a narrow streamed one, 4 output channels a group and 8 a word, whose spans
#: of output channels must be whole words.
CONFIGS = {
    "default": AcceleratorConfig(),
    "small": AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=1, max_width=32, max_height=32,
                               act_bytes=16384, weight_bytes=65536, param_entries=256,
                               program_depth=8),
    "serial": AcceleratorConfig(pe_out=2, pe_in=4, requant_lanes=1, serial_scale_bits=4,
                                max_width=24, max_height=20, max_kernel=5, max_stride=3,
                                act_bytes=8192, weight_bytes=32768, param_entries=128,
                                program_depth=8, ext_bytes=0, mac_stages=2, round_stages=2),
    "window": AcceleratorConfig(requant_lanes=2, depthwise_kernel=4, max_width=32,
                                max_height=32, act_bytes=16384, weight_bytes=65536,
                                param_entries=1024, program_depth=16, ext_bytes=0,
                                mac_stages=1, round_stages=1, split_products=True),
    "stream": AcceleratorConfig(max_width=32, max_height=32, act_bytes=4096, act_banks=4,
                                weight_bytes=32768, param_entries=64, program_depth=16,
                                ext_bytes=1 << 20),
    "narrow": AcceleratorConfig(pe_out=4, pe_in=8, max_width=32, max_height=32, act_bytes=4096,
                                act_banks=4, weight_bytes=8192, param_entries=32,
                                program_depth=16, ext_bytes=1 << 20, round_stages=1),
}
#: Configurations whose cases are always streamed from external memory, and the memory model
#: they are run and planned with (an odd bandwidth, so that beats and cycles do not align).
STREAMED = {"stream": MemoryTiming(37, 3), "narrow": MemoryTiming(23, 5),
            # the ULX3S with its SDRAM (two banks): about its SDRAM's rate
            "ulx3s-sdram": MemoryTiming(10, 2)}


#: What `striate fuzz` runs by default: `CONFIGS` and the boards' (the ULX3S's have four
#: requantizer lanes).
DEFAULT_CONFIGS = ("default", "small", "serial", "window", "stream", "narrow", "icebreaker",
                   "ulx3s", "ulx3s-sdram")


def config_named(name: str) -> AcceleratorConfig:
    """A fuzzed configuration by name: `CONFIGS` or a board of `striate.hw.platform.boards`
    (``ulx3s-sdram`` is the ULX3S with external memory in two banks)."""
    if name in CONFIGS:
        return CONFIGS[name]
    from ..hw.platform.boards import BOARDS as boards
    if name in boards:
        return boards[name].config
    from .errors import ConfigError
    raise ConfigError(f"fuzz configuration must be one of {sorted(CONFIGS) + sorted(boards)}, "
                      f"not {name!r}")


def open_model(name: str):
    """A Verilator model of configuration ``name`` with the memory model it is planned for
    (`STREAMED`); a board's on its part's blocks, as its bitstream has them (the iCEBreaker's
    weights in SPRAM and products on SB_MAC16, Yosys' models of them; the ULX3S's products in
    logic beyond its MULT18X18D)."""
    from .runtime.driver import Device, open as open_device
    from ..hw.platform.boards import BOARDS, part_blocks
    board = BOARDS.get(name)
    if board is not None and part_blocks(board):
        from ..sim.fastsim import VerilatorTransport
        return Device(VerilatorTransport(board.config, board=name,
                                         timing=STREAMED.get(name, MemoryTiming())),
                      board.config, f"{name} on its part's blocks")
    return open_device("verilator", config_named(name), timing=STREAMED.get(name))


def repro(config: str, seed: int, case: int) -> str:
    """The command that reruns one case alone."""
    return f"striate fuzz --config {config} --seed {seed} --case {case}"


# ----------------------------------------------------------------------------- generation

def sequential(ops):
    """An `nn.Module` in eval mode whose forward applies ``ops`` in order: modules (registered
    as ``body.N``, so they get module paths) and plain functions (traced as functional calls or
    methods)."""
    import torch.nn as nn

    class FuzzNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.ModuleList(op for op in ops if isinstance(op, nn.Module))
            self.calls = [None if isinstance(op, nn.Module) else op for op in ops]

        def forward(self, x):
            modules = iter(self.body)
            for call in self.calls:
                x = next(modules)(x) if call is None else call(x)
            return x
    return FuzzNet().eval()


def residual(main, shortcut, form: str, after):
    """An `nn.Module` computing ``after(main(x) + shortcut(x))``, the add spelled as ``form``
    says: ``"+"``, ``"torch.add"``, ``".add"``, ``"+="`` or ``".add_"``."""
    import torch
    import torch.nn as nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.main, self.shortcut, self.after = main, shortcut, after

        def forward(self, x):
            y = self.main(x)
            s = self.shortcut(x)
            if form == "+":
                y = y + s
            elif form == "torch.add":
                y = torch.add(y, s)
            elif form == ".add":
                y = y.add(s)
            elif form == ".add_":
                y = y.add_(s)
            else:
                y += s
            return self.after(y)
    return Residual()


def concatenation(parts, form: str, shortcut, after):
    """An `nn.Module` computing ``after(cat(ys) [+ shortcut(x)])`` along channels, where
    ``parts`` is a list of ``(kind, module)`` and each ``kind`` draws one ``y``: ``"branch"``
    ``module(x)``; ``"input"`` ``x`` itself; ``"repeat"`` the previous ``y`` again; ``"chain"``
    ``module(previous y)`` (so that tensor fans out); ``"nested"`` ``cat([module(x), previous
    y])``. ``form`` is ``"torch.cat"``, ``"torch.concat"``, ``"dim=-3"`` (maps) or ``"dim=-2"``
    (signals)."""
    import torch
    import torch.nn as nn

    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.kinds = [kind for kind, _ in parts]
            self.parts = nn.ModuleList([module or nn.Identity() for _, module in parts])
            self.shortcut, self.after = shortcut, after

        def forward(self, x):
            ys = []
            for kind, module in zip(self.kinds, self.parts):
                if kind == "branch":
                    ys.append(module(x))
                elif kind == "input":
                    ys.append(x)
                elif kind == "repeat":
                    ys.append(ys[-1])
                elif kind == "chain":
                    ys.append(module(ys[-1]))
                else:
                    ys.append(torch.cat([module(x), ys[-1]], 1))
            if form == "torch.cat":
                y = torch.cat(ys, 1)
            elif form == "torch.concat":
                y = torch.concat(ys, dim=1)
            else:                       # "dim=-3" on maps, "dim=-2" on signals
                y = torch.cat(ys, dim=int(form[4:]))
            if self.shortcut is not None:
                y = y + self.shortcut(x)
            return self.after(y)
    return Concat()


def _module_of(op):
    """``op`` as a module: itself, or one whose forward calls it (a functional form)."""
    import torch.nn as nn
    if isinstance(op, nn.Module):
        return op

    class Call(nn.Module):
        def forward(self, x):
            return op(x)
    return Call()


def _method(name, *args):
    def call(x):
        return getattr(x, name)(*args)
    call.__qualname__ = f"x.{name}{args}"
    return call


def _flat_view(x):
    return x.view(x.size(0), -1)


def _flat_reshape(x):
    return x.reshape(x.size(0), -1)


@dataclass
class Case:
    """One generated network: the module, its calibration images, a readable recipe and the
    calibration method it is compiled with."""

    model: object
    calibration: np.ndarray
    recipe: list
    method: str = "minmax"


class _Builder:
    """Draws layers for one configuration; ``legal`` keeps shapes within its limits. Maps fit
    half the activation memory, or with ``streamed`` (a program from external memory in tiles)
    up to four times all of it."""

    def __init__(self, rng, config: AcceleratorConfig, legal: bool, streamed: bool = False):
        import torch
        self.torch, self.rng, self.cfg, self.legal = torch, rng, config, legal
        self.map_budget = 4 * config.act_bytes if streamed else config.act_bytes // 2
        self.ops, self.recipe = [], []
        self.macs_left = config.macs_per_cycle * 10 ** rng.uniform(3, 5.8)

    def pick(self, choices, p=None):
        return choices[int(self.rng.choice(len(choices), p=p))]

    def small_int(self, lo, hi):
        """Log-uniform integer in [lo, hi], so small values are common and hi is reached."""
        if hi <= lo:
            return lo
        return int(min(hi, np.floor(np.exp(self.rng.uniform(np.log(lo), np.log(hi + 1))))))

    def channels(self, groups: int, cap: int) -> int:
        """Most channels a layer draws: ``groups`` groups of ``pe_out``, at most ``cap`` (to
        keep simulations short) unless that leaves fewer than two whole groups, so that arrays
        of 32 rows (the ULX3S's) also see layers of several channel groups."""
        return max(1, min(groups * self.cfg.pe_out, max(cap, 2 * self.cfg.pe_out)))

    def add(self, op, text):
        self.ops.append(op)
        self.recipe.append(text)

    def shape_after(self, op, shape):
        x = self.torch.zeros(1, *shape)
        with self.torch.no_grad():
            return tuple(op(x).shape[1:])

    def fits(self, shape) -> bool:
        if not self.legal:
            return True
        c, h, w = map_shape(shape)
        return map_bytes(shape, self.cfg) <= self.map_budget and h >= 1 and w >= 1

    def fits_alive(self, *shapes) -> bool:
        """Maps alive at once (a block's input kept for a shortcut or a concatenation beside
        its branches) fit twice the map budget together."""
        return not self.legal or sum(map_bytes(s, self.cfg) for s in shapes) <= 2 * self.map_budget

    # --- layer kinds: each returns the new shape, or None if it drew nothing usable

    def conv(self, shape):
        import torch.nn as nn
        c, h, w = shape
        cfg, rng = self.cfg, self.rng
        kmax = cfg.max_kernel if self.legal else cfg.max_kernel + 1
        kh, kw = self.small_int(1, min(kmax, h + 2)), self.small_int(1, min(kmax, w + 2))
        dilation = (self.dilation(kh, kmax), self.dilation(kw, kmax))
        kh, kw = (d * (k - 1) + 1 for d, k in zip(dilation, (kh, kw)))  # the spans
        smax = cfg.max_stride if self.legal else cfg.max_stride + 1
        stride = (self.small_int(1, smax), self.small_int(1, smax))
        mode = self.pick(["int", "tuple", "same", "valid"], p=[0.4, 0.35, 0.15, 0.1])
        if mode == "same" and (kh % 2 == 0 or kw % 2 == 0 or stride != (1, 1)):
            mode = "tuple"
        if mode in ("int", "tuple"):
            # Mostly up to k - 1; now and then wider than the kernel (all-padding borders),
            # up to the descriptor's 3-bit field (and past it when not `legal`).
            wide = (7 if self.legal else 8) if rng.random() < 0.1 else None
            ph, pw = (int(rng.integers(0, (wide or min(3, k - 1)) + 1)) for k in (kh, kw))
            if mode == "int":
                pw = ph
            padding = ph if mode == "int" else (ph, pw)
            if kh > h + 2 * ph or kw > w + 2 * pw:
                return None
        else:
            padding = mode
            if mode == "valid" and (kh > h or kw > w):
                return None
        out_max = self.channels(4, 48)
        o = self.small_int(1, out_max)
        groups = self.groups(c)
        if groups > 1:          # depthwise (groups = c) or grouped, with a channel multiplier
            o = groups * self.small_int(1, max(1, out_max // groups))
            if groups == c and out_max >= 2 * c and rng.random() < 0.5:    # depth multiplier
                o = c * self.small_int(2, out_max // c)
        bias = bool(rng.random() < 0.8)
        taps = tuple((k - 1) // d + 1 for k, d in zip((kh, kw), dilation))
        if groups == 1 and dilation == (1, 1) and mode != "same" and cfg.psum_entries \
                and self.side_draw() < 0.5:
            # half the time the smallest square kernel whose weights for pe_out outputs exceed
            # half the weight memory (streamed, the layer runs in chunks of input channels),
            # thin and at column stride 1, so that pixel pairs keep their sums between chunks
            room = min(h + 2 * ph, w + 2 * pw) if mode != "valid" else min(h, w)
            k = next((k for k in range(1, min(kmax, room) + 1)
                      if map_bytes((c, k, k), cfg) * cfg.pe_out > cfg.weight_bytes // 2), None)
            if k is not None:
                taps = kh, kw = k, k
                o, stride = 1 + (o - 1) % max(1, cfg.pe_out // 2), (stride[0], 1)
        conv = nn.Conv2d(c, o, taps, stride=stride if mode != "same" else 1,
                         padding=padding, bias=bias, groups=groups, dilation=dilation)
        out = self.shape_after(conv, shape)
        macs = out[0] * out[1] * out[2] * c // groups * taps[0] * taps[1]
        if macs > self.macs_left or not self.fits(out) or not self.fits_alive(shape, out):
            return None
        self.macs_left -= macs
        with self.torch.no_grad():       # weights over decades, some channels much smaller
            conv.weight.mul_(float(10 ** rng.uniform(-3, 2)))
            if rng.random() < 0.3:
                conv.weight.mul_(self.torch.from_numpy(
                    10 ** rng.uniform(-3, 0, (o, 1, 1, 1))).float())
            if bias:
                conv.bias.mul_(float(10 ** rng.uniform(-3, 1)))
        self.add(conv, repr(conv))
        if rng.random() < 0.3:
            bn = self._bn(o)
            self.add(bn, repr(bn))
        return out

    def separable(self, shape):
        """A depthwise-separable block (MobileNet, DS-CNN): a depthwise convolution of up to
        3x3 with 'same' padding, stride 1 or 2 and a depth multiplier of 1 to 3, BatchNorm and
        ReLU at random, then a 1x1 pointwise convolution."""
        import torch.nn as nn
        c, h, w = shape
        rng = self.rng
        kh, kw = self.small_int(1, 3), self.small_int(1, 3)
        stride = self.small_int(1, 2)
        m = self.small_int(1, 3) if rng.random() < 0.4 else 1
        out = self.small_int(1, self.channels(4, 48))
        dw = nn.Conv2d(c, c * m, (kh, kw), stride, (kh // 2, kw // 2), groups=c,
                       bias=bool(rng.random() < 0.5))
        mid = self.shape_after(dw, shape)
        macs = mid[0] * mid[1] * mid[2] * (kh * kw + out)
        if macs > self.macs_left or not self.fits(mid) or not self.fits_alive(shape, mid):
            return None
        self.macs_left -= macs
        with self.torch.no_grad():
            dw.weight.mul_(float(10 ** rng.uniform(-2, 1)))
        self.add(dw, repr(dw))
        if rng.random() < 0.5:
            bn = self._bn(c * m)
            self.add(bn, repr(bn))
        if rng.random() < 0.7:
            self.add(nn.ReLU(), "nn.ReLU()")
        pw = nn.Conv2d(c * m, out, 1)
        self.add(pw, repr(pw))
        return self.shape_after(pw, mid)

    def dilation(self, k: int, kmax: int) -> int:
        """1, or for one kernel axis in eight a dilation whose span ``d * (k - 1) + 1`` stays
        within ``kmax``."""
        if k < 2 or self.rng.random() >= 0.125:
            return 1
        return self.small_int(1, max(1, (kmax - 1) // (k - 1)))

    def groups(self, c: int) -> int:
        """1, or for one convolution in five a divisor of its ``c`` input channels (``c``
        itself, depthwise, half the time)."""
        if c < 2 or self.rng.random() >= 0.2:
            return 1
        if self.rng.random() < 0.5:
            return c
        return int(self.rng.choice([d for d in range(2, c + 1) if c % d == 0]))

    def branch(self, shape, stride: int, out: int, convs: int):
        """An `nn.Sequential` of ``convs`` convolutions with odd kernels and half-kernel padding
        (the first with ``stride``), BatchNorm and ReLU between them at random; None when it
        does not fit. Returns (branch, output shape, MACs)."""
        import torch.nn as nn
        layers, macs, c = [], 0, shape[0]
        kmax = min(self.cfg.max_kernel, 5)
        for i in range(convs):
            k = int(self.rng.choice([k for k in (1, 3, 5) if k <= kmax]))
            groups = self.groups(c)
            conv = nn.Conv2d(c, out, k, stride if i == 0 else 1, k // 2,
                             bias=bool(self.rng.random() < 0.5),
                             groups=groups if out % groups == 0 else 1)
            with self.torch.no_grad():
                conv.weight.mul_(float(10 ** self.rng.uniform(-2, 1)))
            layers.append(conv)
            if self.rng.random() < 0.5:
                layers.append(self._bn(out))
            if i + 1 < convs and self.rng.random() < 0.7:
                layers.append(nn.ReLU(inplace=bool(self.rng.random() < 0.5)))
            c = out
        seq = nn.Sequential(*layers).eval()
        out_shape = self.shape_after(seq, shape)
        for conv in (m for m in seq if isinstance(m, nn.Conv2d)):
            macs += conv.weight.numel() * out_shape[1] * out_shape[2]
        return seq, out_shape, macs

    def residual(self, shape):
        """A residual block: a branch of convolutions added to the input itself (identity), to
        a 1x1 projection of it (when the branch changes channels or stride) or to a second
        branch (fan-out), spelled in any supported way, with a ReLU after it at random."""
        import torch.nn as nn
        c, h, w = shape
        rng = self.rng
        stride = int(rng.choice([1, 1, 2])) if min(h, w) > 1 else 1
        out = c if rng.random() < 0.5 else self.small_int(1, self.channels(4, 48))
        main, out_shape, macs = self.branch(shape, stride, out, int(rng.integers(1, 3)))
        kind = "identity" if (stride, out) == (1, c) and rng.random() < 0.7 else \
            self.pick(["projection", "branch"])
        if kind == "identity":
            shortcut = nn.Identity()
        elif kind == "projection":
            shortcut = nn.Conv2d(c, out, 1, stride)
            macs += c * out * out_shape[1] * out_shape[2]
        else:
            shortcut, _, more = self.branch(shape, stride, out, 1)
            macs += more
        if macs > self.macs_left or not self.fits(out_shape) or \
                not self.fits_alive(shape, out_shape, out_shape) or \
                self.shape_after(shortcut, shape) != out_shape:
            return None
        self.macs_left -= macs
        form = self.pick(["+", "torch.add", ".add", "+=", ".add_"])
        after = self.pick([nn.Identity(), nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6()])
        self.add(residual(main, shortcut, form, after),
                 f"residual({main!r}, {shortcut!r}, {form!r}, {after!r})")
        return out_shape

    def concat(self, shape):
        """Two to four tensors joined along channels: branches of convolutions with any
        number of channels, the block's input itself, a tensor twice, a branch on another part
        (fan-out), a nested concatenation; an add of a branch after it and a ReLU at random."""
        import torch.nn as nn
        c, h, w = shape
        rng = self.rng
        stride = 2 if min(h, w) > 1 and rng.random() < 0.2 else 1
        kinds = ["branch", "input", "repeat", "chain", "nested"]
        spatial = (h, w) if stride == 1 else ((h + 1) // 2, (w + 1) // 2)   # odd kernels, k // 2 padding
        parts, channels, macs = [], [], 0
        for i in range(int(rng.integers(2, 5))):
            kind = self.pick(kinds, p=[0.45, 0.15, 0.1, 0.15, 0.15])
            if i == 0 and kind in ("repeat", "chain", "nested"):
                kind = "branch"
            if kind == "input" and stride != 1:
                kind = "branch"
            width = self.small_int(1, self.channels(3, 40))
            module = None
            if kind in ("branch", "nested"):
                convs = 1 if self.cfg.program_depth < 16 else int(rng.integers(1, 3))
                module, _, more = self.branch(shape, stride, width, convs)
                macs += more
            elif kind == "chain":
                module, _, more = self.branch((channels[-1],) + spatial, 1, width, 1)
                macs += more
            parts.append((kind, module))
            channels.append({"branch": width, "chain": width, "input": c,
                             "repeat": channels[-1] if channels else 0,
                             "nested": width + (channels[-1] if channels else 0)}[kind])
        out_shape = (sum(channels),) + spatial
        shortcut = None
        if rng.random() < 0.2 and (self.cfg.residual_add or not self.legal):
            shortcut, _, more = self.branch(shape, stride, out_shape[0], 1)
            macs += more
        lanes = self.cfg.pe_in
        slots = (sum(-(-n // lanes) * lanes for n in channels),) + spatial   # zero channels too
        if macs > self.macs_left or not self.fits(out_shape) or \
                not self.fits_alive(shape, slots, out_shape):
            return None
        form = self.pick(["torch.cat", "torch.concat", "dim=-3"])
        after = self.pick([nn.Identity(), nn.ReLU(), nn.ReLU(inplace=True)])
        block = concatenation(parts, form, shortcut, after)
        # Layers it takes: its convolutions, copies of the input or a repeated tensor, and
        # about two more (a copy without zero channels, the add, a ReLU's own layer).
        layers = sum(isinstance(m, nn.Conv2d) for m in block.modules()) + \
            sum(kind in ("input", "repeat") for kind, _ in parts) + 2
        if self.legal and layers > self.cfg.program_depth // 2 + 1:
            return None
        self.macs_left -= macs
        self.layers_drawn = layers
        self.add(block, f"concatenation({parts!r}, {form!r}, {shortcut!r}, {after!r})")
        return out_shape

    def _bn(self, channels: int, cls=None):
        """A BatchNorm with random statistics (``cls`` default: BatchNorm2d)."""
        import torch.nn as nn
        bn = (cls or nn.BatchNorm2d)(channels)
        with self.torch.no_grad():
            bn.running_mean.copy_(self.torch.randn(channels) * float(10 ** self.rng.uniform(-2, 1)))
            bn.running_var.copy_(self.torch.rand(channels) * float(10 ** self.rng.uniform(-2, 2))
                                 + 1e-3)
            bn.weight.copy_(self.torch.randn(channels))
            bn.bias.copy_(self.torch.randn(channels) * 0.5)
        return bn

    def activation(self, shape):
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        choices = [(nn.ReLU(), "nn.ReLU()"), (nn.ReLU(inplace=True), "nn.ReLU(inplace=True)"),
                   (nn.ReLU6(), "nn.ReLU6()"), (nn.Hardtanh(0.0, 6.0), "nn.Hardtanh(0, 6)"),
                   (F.relu, "F.relu"), (torch.relu, "torch.relu"),
                   (_method("relu"), "x.relu()"), (_method("relu_"), "x.relu_()"),
                   (F.relu6, "F.relu6")]
        if self.rng.random() < 0.35 and (self.cfg.activation_tables or not self.legal):
            op, text = self.table_function()
        else:
            op, text = choices[int(self.rng.integers(len(choices)))]
        self.add(op, text)
        return shape

    def table_function(self):
        """An element-wise function by table, as a module or a functional form, with random
        options: (op, text)."""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        rng = self.rng
        lo = float(np.round(rng.uniform(-3, 1), 2))
        hi = float(np.round(lo + rng.uniform(0.1, 4), 2))
        slope, alpha = float(np.round(rng.uniform(-0.5, 0.5), 3)), float(np.round(
            rng.uniform(0.1, 2), 2))
        choices = [
            (nn.Tanh(), "nn.Tanh()"), (torch.tanh, "torch.tanh"), (_method("tanh"), "x.tanh()"),
            (nn.Sigmoid(), "nn.Sigmoid()"), (torch.sigmoid, "torch.sigmoid"),
            (_method("sigmoid_"), "x.sigmoid_()"),
            (nn.Hardtanh(lo, hi), f"nn.Hardtanh({lo}, {hi})"),
            (partial(F.hardtanh, min_val=lo, max_val=hi), f"F.hardtanh(x, {lo}, {hi})"),
            (nn.Hardsigmoid(), "nn.Hardsigmoid()"), (F.hardswish, "F.hardswish"),
            (nn.Hardswish(), "nn.Hardswish()"), (nn.SiLU(), "nn.SiLU()"), (F.silu, "F.silu"),
            (nn.LeakyReLU(slope), f"nn.LeakyReLU({slope})"),
            (partial(F.leaky_relu, negative_slope=slope), f"F.leaky_relu(x, {slope})"),
            (nn.GELU(), "nn.GELU()"), (partial(F.gelu, approximate="tanh"),
                                       "F.gelu(x, approximate='tanh')"),
            (nn.ELU(alpha), f"nn.ELU({alpha})"), (partial(F.elu, alpha=alpha),
                                                  f"F.elu(x, {alpha})")]
        return choices[int(rng.integers(len(choices)))]

    def side_draw(self) -> float:
        """A uniform draw that leaves ``rng`` where it was, so that the cases a generator
        change did not touch stay those that earlier seeds named."""
        return np.random.default_rng(self.rng.bit_generator.state["state"]["state"]).random()

    def pool(self, shape):
        import torch.nn as nn
        import torch.nn.functional as F
        c, h, w = shape
        cfg, rng = self.cfg, self.rng
        kind = self.pick(["max", "avg", "global"], p=[0.5, 0.3, 0.2])
        if kind in ("avg", "global") and not cfg.avg_pool and self.legal and rng.random() < 0.9:
            kind = "max"
        if kind == "global":
            op, text = self.pick([(nn.AdaptiveAvgPool2d(1), "nn.AdaptiveAvgPool2d(1)"),
                                  (nn.AdaptiveAvgPool2d((1, 1)), "nn.AdaptiveAvgPool2d((1, 1))"),
                                  (partial(F.adaptive_avg_pool2d, output_size=1),
                                   "F.adaptive_avg_pool2d(x, 1)")])
            self.add(op, text)
            return (c, 1, 1)
        kmax = min(cfg.max_kernel, h, w) if self.legal else min(h, w)
        kh, kw = self.small_int(1, kmax), self.small_int(1, kmax)
        stride = None if rng.random() < 0.4 else (self.small_int(1, cfg.max_stride),
                                                 self.small_int(1, cfg.max_stride))
        if stride is None and self.legal and max(kh, kw) > cfg.max_stride:
            stride = (min(kh, cfg.max_stride), min(kw, cfg.max_stride))
        padding = (0, 0)
        if rng.random() < 0.3 and (cfg.pool_padding or not self.legal):
            padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
        if kind == "max" and min(w, cfg.max_kernel, cfg.max_stride) >= 2 \
                and self.side_draw() < 0.5:
            # the common window two columns wide at column stride 2, which pixel pairs pool
            kw, padding = 2, (padding[0], 0)
            stride = None if stride is None else (stride[0], 2)
        functional = rng.random() < 0.3
        ceil = kind == "max" and rng.random() < 0.25     # after a ReLU, as it must be
        if kind == "max":
            op = (partial(F.max_pool2d, kernel_size=(kh, kw), stride=stride, padding=padding,
                          ceil_mode=ceil)
                  if functional else nn.MaxPool2d((kh, kw), stride, padding, ceil_mode=ceil))
        else:
            # count_include_pad=False is supported where no window reaches padding
            count = not (padding == (0, 0) and rng.random() < 0.3)
            op = (partial(F.avg_pool2d, kernel_size=(kh, kw), stride=stride, padding=padding,
                          count_include_pad=count)
                  if functional else nn.AvgPool2d((kh, kw), stride, padding,
                                                  count_include_pad=count))
        text = (f"F.{kind}_pool2d(kernel_size={(kh, kw)}, stride={stride}, padding={padding}"
                f"{', ceil_mode=True' * ceil})" if functional else repr(op))
        out = self.shape_after(op, shape)
        if min(out[1:]) < 1:
            return None
        if ceil:
            self.add(nn.ReLU(), "nn.ReLU()")
        self.add(op, text)
        return out

    def pad(self, shape):
        """Zero padding of 0 to 2 on each side (a signal's length only): ``F.pad``,
        ``ZeroPad1d/2d`` or ``ConstantPad1d/2d`` with value 0; folded into a convolution or
        average pool after it when even, else a layer of its own."""
        import torch.nn as nn
        import torch.nn.functional as F
        if self.rng.random() < 0.3:
            return self.upsample(shape)
        signal = len(shape) == 2
        pads = [int(p) for p in self.rng.integers(0, 3, 2 if signal else 4)]
        if not any(pads) or not self.fits(self.shape_after(partial(F.pad, pad=pads), shape)):
            return None
        form = self.pick(["F.pad", "ZeroPad", "ConstantPad"])
        if form == "F.pad":
            op = partial(F.pad, pad=tuple(pads))
            text = f"F.pad(x, {tuple(pads)})"
        elif form == "ZeroPad":
            op = (nn.ZeroPad1d if signal else nn.ZeroPad2d)(tuple(pads))
            text = repr(op)
        else:
            op = (nn.ConstantPad1d if signal else nn.ConstantPad2d)(tuple(pads), 0.0)
            text = repr(op)
        self.add(op, text)
        return self.shape_after(op, shape)

    def upsample(self, shape):
        """Nearest-neighbour upsampling by 1 to 3 per axis (a signal's length only):
        ``nn.Upsample``, ``nn.UpsamplingNearest2d`` or ``F.interpolate`` with ``scale_factor``
        or ``size``; within ``max_width`` and ``max_height`` when `legal`."""
        import torch.nn as nn
        import torch.nn.functional as F
        if self.legal and not self.cfg.depthwise_kernel and self.rng.random() < 0.9:
            return None                 # mostly what the configuration can run
        signal = len(shape) == 2
        dims = shape[1:]
        factors = tuple(int(f) for f in self.rng.integers(1, 4, len(dims)))
        if all(f == 1 for f in factors):
            factors = (2,) + factors[1:]
        out = tuple(n * f for n, f in zip(dims, factors))
        limits = (self.cfg.max_width,) if signal else (self.cfg.max_height, self.cfg.max_width)
        new = (shape[0],) + out
        if self.legal and (any(n > m for n, m in zip(out, limits)) or not self.fits(new)
                           or not self.fits_alive(shape, new)):
            return None
        scale = factors[0] if len(set(factors)) == 1 else factors
        form = self.pick(["module", "nearest2d", "scale", "size"])
        if form == "module" or (form == "nearest2d" and (signal or len(set(factors)) > 1)):
            op = nn.Upsample(scale_factor=scale)
            text = repr(op)
        elif form == "nearest2d":
            op = nn.UpsamplingNearest2d(scale_factor=scale)
            text = repr(op)
        elif form == "scale":
            op = partial(F.interpolate, scale_factor=scale, mode="nearest")
            text = f"F.interpolate(x, scale_factor={scale})"
        else:
            op = partial(F.interpolate, size=out if len(out) > 1 else out[0])
            text = f"F.interpolate(x, size={out})"
        self.add(op, text)
        return new

    def no_op(self, shape):
        import torch.nn as nn
        import torch.nn.functional as F
        op, text = self.pick([(nn.Identity(), "nn.Identity()"), (nn.Dropout(0.3), "nn.Dropout(0.3)"),
                              (nn.Dropout2d(0.2), "nn.Dropout2d(0.2)"),
                              (partial(F.dropout, p=0.5, training=False), "F.dropout(x, 0.5)"),
                              (partial(F.dropout2d, p=0.1, training=False),
                               "F.dropout2d(x, 0.1)"),
                              (_method("contiguous"), "x.contiguous()"),
                              (_method("clone"), "x.clone()")])
        self.add(op, text)
        return shape

    def head(self, shape):
        """Flatten and one to three linear layers, with clamps and no-ops between them."""
        import torch
        import torch.nn as nn
        op, text = self.pick([(nn.Flatten(), "nn.Flatten()"),
                              (partial(torch.flatten, start_dim=1), "torch.flatten(x, 1)"),
                              (_method("flatten", 1), "x.flatten(1)"),
                              (_flat_view, "x.view(x.size(0), -1)"),
                              (_flat_reshape, "x.reshape(x.size(0), -1)")])
        self.add(op, text)
        features = int(np.prod(shape))
        for i in range(int(self.rng.integers(1, 4))):
            if self.rng.random() < 0.3:
                self.activation(shape)
            if self.rng.random() < 0.1:      # no-ops of flat features (Dropout1d wants 2-D)
                self.add(*self.pick([(nn.Dropout1d(0.2), "nn.Dropout1d(0.2)"),
                                     (nn.Dropout(0.5), "nn.Dropout(0.5)"),
                                     (nn.Identity(), "nn.Identity()")]))
            out = self.small_int(1, self.channels(4, 64))
            linear = nn.Linear(features, out, bias=bool(self.rng.random() < 0.85))
            with torch.no_grad():
                linear.weight.mul_(float(10 ** self.rng.uniform(-2, 2)))
            self.add(linear, repr(linear))
            features = out
        return (features,)


def _input_shape(b: _Builder):
    cfg = b.cfg
    hmax = cfg.max_height if b.legal else cfg.max_height + 2
    wmax = cfg.max_width if b.legal else cfg.max_width + 2
    h, w = b.small_int(1, hmax), b.small_int(1, wmax)
    if b.rng.random() < 0.15:           # the configuration's largest map
        h, w = cfg.max_height, cfg.max_width
    c = b.small_int(1, 3 * cfg.pe_in + 2)
    if b.map_budget > cfg.act_bytes and b.rng.random() < 0.25:     # larger than the chip
        h, w, c = cfg.max_height, cfg.max_width, 3 * cfg.pe_in + 2
    while c > 1 and not b.fits((c, h, w)):
        c -= 1
    while not b.fits((c, h, w)) and h * w > 1:      # too large for the memory at any width
        h, w = (h - max(1, h // 4), w) if h >= w else (h, w - max(1, w // 4))
    return (c, h, w)


def _calibration(rng, shape) -> np.ndarray:
    n = int(rng.integers(4, 17))
    kind = rng.choice(["normal", "uniform", "sparse", "offset"])
    if kind == "normal":
        x = rng.standard_normal((n, *shape))
    elif kind == "uniform":
        x = rng.random((n, *shape))
    elif kind == "sparse":
        x = rng.exponential(1.0, (n, *shape)) * (rng.random((n, *shape)) < 0.1)
    else:
        x = rng.standard_normal((n, *shape)) * 0.1 + rng.uniform(-3, 3)
    return (x * 10 ** rng.uniform(-4, 4)).astype(np.float32)


def _signal_layer(b: _Builder, shape):
    """One layer of a time-delay net on a ``C x L`` signal: ``Conv1d`` (with ``BatchNorm1d`` at
    random), a clamp, a 1-D pool (module or functional), a global pool, a residual ``Conv1d``
    or a concatenation of two ``Conv1d`` along channels. Returns the new shape or None."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    cfg, rng = b.cfg, b.rng
    c, length = shape
    kind = b.pick(["conv", "activation", "pool", "global", "residual", "concat", "pad"],
                  p=[0.42, 0.14, 0.19, 0.05, 0.08, 0.07, 0.05])
    if kind in ("residual", "concat"):
        k = int(rng.choice([k for k in (1, 3, 5) if k <= min(cfg.max_kernel, length + 2)]))
        out = b.small_int(1, b.channels(2, 32))
        first = nn.Conv1d(c, out if kind == "concat" else c, k, padding=k // 2)
        second = nn.Conv1d(c, out, 1) if kind == "concat" else nn.Identity()
        new = (2 * out, length) if kind == "concat" else shape
        if kind == "residual" and not (cfg.residual_add or not b.legal):
            return None
        if not b.fits_alive(shape, new, new):
            return None
        block = concatenation([("branch", first), ("branch", second)],
                              b.pick(["torch.cat", "torch.concat", "dim=-2"]), None, nn.ReLU()) \
            if kind == "concat" else residual(first, second, b.pick(["+", ".add"]), nn.ReLU())
        b.add(block, f"{kind}({first!r}, {second!r})")
        return new
    if kind == "activation":
        return b.activation(shape)
    if kind == "pad":
        return b.pad(shape)
    if kind == "global":
        op, text = b.pick([(nn.AdaptiveAvgPool1d(1), "nn.AdaptiveAvgPool1d(1)"),
                           (partial(F.adaptive_avg_pool1d, output_size=1),
                            "F.adaptive_avg_pool1d(x, 1)")])
        if not cfg.avg_pool and b.legal:
            return None
        b.add(op, text)
        return (c, 1)
    kmax = min(cfg.max_kernel if b.legal else cfg.max_kernel + 1, length + 2)
    k = b.small_int(1, kmax)
    stride = b.small_int(1, cfg.max_stride if b.legal else cfg.max_stride + 1)
    if kind == "pool":
        k = min(k, length)
        avg = rng.random() < 0.4 and (cfg.avg_pool or not b.legal)
        pad = int(rng.integers(0, k // 2 + 1)) if cfg.pool_padding and rng.random() < 0.3 else 0
        ceil = not avg and rng.random() < 0.25          # after a ReLU, as it must be
        if not avg and min(length, cfg.max_stride) >= 2 and b.side_draw() < 0.5:
            k, stride, pad = 2, 2, 0        # the common window, which pixel pairs pool
        if rng.random() < 0.3:
            fn = F.avg_pool1d if avg else F.max_pool1d
            op = partial(fn, kernel_size=k, stride=stride, padding=pad,
                         **({"ceil_mode": True} if ceil else {}))
            text = f"F.{'avg' if avg else 'max'}_pool1d({k}, {stride}, {pad}{', ceil' * ceil})"
        else:
            op = nn.AvgPool1d(k, stride, pad) if avg else nn.MaxPool1d(k, stride, pad,
                                                                       ceil_mode=ceil)
            text = repr(op)
        if ceil:
            b.add(nn.ReLU(), "nn.ReLU()")
    else:
        padding = b.pick([0, k // 2, "same", "valid"])
        if padding == "same" and (k % 2 == 0 or stride != 1):
            padding = k // 2
        if padding == "valid" and k > length:
            return None
        out = b.small_int(1, b.channels(4, 48))
        groups = b.groups(c)
        if groups > 1:
            out = groups * b.small_int(1, max(1, 48 // groups))
        dilation = b.dilation(k, kmax)          # a time-delay net's widening context
        op = nn.Conv1d(c, out, k, stride=stride, padding=padding, bias=bool(rng.random() < 0.8),
                       groups=groups, dilation=dilation)
        with torch.no_grad():
            op.weight.mul_(float(10 ** rng.uniform(-2, 1)))
        text = repr(op)
    try:
        new = b.shape_after(op, shape)
    except RuntimeError:            # the window does not fit
        return None
    if min(new) < 1 or not b.fits_alive(shape, new):
        return None
    b.add(op, text)
    if kind == "conv" and rng.random() < 0.3:
        bn = b._bn(new[0], nn.BatchNorm1d)
        b.add(bn, repr(bn))
    return new


def _signal_case(b: _Builder, rng) -> Case:
    """A time-delay net on ``N x C x L`` signals: 1-D layers, then a flatten and linear head at
    random."""
    cfg = b.cfg
    length = b.small_int(1, cfg.max_width if b.legal else cfg.max_width + 2)
    shape = (b.small_int(1, 3 * cfg.pe_in + 2), length)
    while shape[0] > 1 and not b.fits(shape):
        shape = (shape[0] - 1, length)
    first = shape
    for _ in range(int(rng.integers(1, 7))):
        shape = _signal_layer(b, shape) or shape
    if not b.ops or rng.random() < 0.5 and int(np.prod(shape)) <= 4096:
        b.head(shape)
    return Case(sequential(b.ops), _calibration(rng, first), b.recipe)


def _vector_case(b: _Builder, rng) -> Case:
    """A multilayer perceptron on ``N x F`` vectors: Linear layers with BatchNorm1d, clamps,
    residual adds and concatenations of vectors at random."""
    import torch.nn as nn
    features = b.small_int(1, 1024)     # the MLPerf Tiny autoencoder reads 640
    first = features
    for _ in range(int(rng.integers(1, 6))):
        out = b.small_int(1, 128) if rng.random() < 0.6 else features
        layers = [nn.Linear(features, out, bias=bool(rng.random() < 0.8))]
        if rng.random() < 0.5:
            layers.append(b._bn(out, nn.BatchNorm1d))
        if rng.random() < 0.6:
            tables = b.cfg.activation_tables or not b.legal
            layers.append(nn.ReLU() if rng.random() < 0.7 or not tables else
                          _module_of(b.table_function()[0]))
        block = nn.Sequential(*layers)
        if out == features and rng.random() < 0.4 and (b.cfg.residual_add or not b.legal):
            block = residual(block, nn.Identity(), b.pick(["+", ".add"]),
                             b.pick([nn.Identity(), nn.ReLU()]))
        elif rng.random() < 0.25:       # joined with the block's input or another linear layer
            kind = b.pick(["input", "repeat", "branch", "chain"])
            width = {"input": features, "repeat": out}.get(kind, b.small_int(1, 64))
            other = nn.Linear(out if kind == "chain" else features, width) \
                if kind in ("branch", "chain") else None
            block = concatenation([("branch", block), (kind, other)],
                                  b.pick(["torch.cat", "torch.concat"]), None,
                                  b.pick([nn.Identity(), nn.ReLU()]))
            out += width
        b.add(block, repr(block))
        features = out
    return Case(sequential(b.ops), _calibration(rng, (first,)), b.recipe)


def random_case(config: AcceleratorConfig, seed: int, case: int,
                streamed: bool = False) -> Case:
    """Case ``case`` of ``seed`` for ``config`` (deterministic), with a calibration method
    drawn from a stream of its own; with ``streamed``, maps larger than the chip."""
    generated = _random_network(config, seed, case, streamed)
    method = ["minmax", "percentile", "mse"][int(np.random.default_rng([seed, case, 2])
                                                 .choice(3, p=[0.6, 0.2, 0.2]))]
    recipe = generated.recipe + ([f"calibration_method={method!r}"] if method != "minmax" else [])
    return Case(generated.model, generated.calibration, recipe, method)


def _random_network(config: AcceleratorConfig, seed: int, case: int, streamed: bool) -> Case:
    import torch
    rng = np.random.default_rng([seed, case])
    torch.manual_seed(int(rng.integers(1 << 31)))
    b = _Builder(rng, config, legal=bool(rng.random() < 0.9), streamed=streamed)
    if rng.random() < 0.08:
        return _vector_case(b, rng)
    if rng.random() < 0.08:
        return _signal_case(b, rng)
    shape = _input_shape(b)
    first = shape
    depth = int(rng.integers(1, 9)) if rng.random() < 0.95 else config.program_depth + 1
    steps = 0
    while steps < depth:
        kind = b.pick(["conv", "activation", "pool", "no_op", "residual", "concat", "pad",
                       "separable"], p=[0.28, 0.15, 0.17, 0.06, 0.13, 0.1, 0.06, 0.05])
        if kind == "residual" and not config.residual_add and b.legal and rng.random() < 0.95:
            kind = "conv"               # mostly what the configuration can run
        if kind == "concat" and config.program_depth < 16 and b.legal and rng.random() < 0.75:
            kind = "conv"               # it takes several layers of a short program
        if kind == "conv" or not b.recipe:
            kind = "conv"
        new = getattr(b, kind)(shape)
        if new is None:
            depth -= 1
            continue
        steps += {"conv": 1, "pool": 1, "residual": 3, "pad": 1, "separable": 2}.get(kind, 0)
        if kind == "concat":
            steps += b.layers_drawn
        shape = new
    if rng.random() < 0.5 and int(np.prod(shape)) <= 4096:
        b.head(shape)
    if not b.ops:                    # nothing fitted: a single 1x1 convolution
        import torch.nn as nn
        conv = nn.Conv2d(first[0], int(rng.integers(1, 9)), 1)
        b.add(conv, repr(conv))
    model = sequential(b.ops)
    return Case(model, _calibration(rng, first), b.recipe)


# ----------------------------------------------------------------------------- checking

DOCUMENTED = (MappingError, QuantizationError)


def refusal_reason(exc: Exception) -> str:
    """A short reason for a documented refusal: the configuration field for a mapping limit,
    the numerics rule for a quantization one."""
    text = str(exc)
    if isinstance(exc, MappingError):
        found = re.search(r"AcceleratorConfig\.(\w+)", text)
        if found:
            return f"limit {found.group(1)}"
        found = re.search(r"descriptor field (\w+)", text)
        if found:
            return f"limit descriptor {found.group(1)}"
        return "limit " + re.sub(r".*: ", "", text)[:40]
    if "accumulator" in text:
        return "int32 accumulator bound"
    if "requantization scale" in text:
        return "requantization scale range"
    if "bias" in text:
        return "bias beyond int32"
    return "quantization " + text[:40]


@dataclass
class Outcome:
    """What one case gave: ``status`` is ``"pass"``, ``"refused"`` or ``"fail"``."""

    config: str
    seed: int
    case: int
    status: str
    reason: str = ""
    detail: str = ""
    layers: int = 0
    recipe: list = field(default_factory=list)

    def line(self) -> str:
        head = f"{self.status.upper():<7} {self.config}/{self.seed}/{self.case}"
        if self.status == "fail":
            return f"{head}: {self.reason}; rerun: {repro(self.config, self.seed, self.case)}"
        return f"{head}: {self.reason or f'{self.layers} layers bit-exact'}"


def _inputs(program, case: Case, rng) -> np.ndarray:
    """Two calibration images and one of random int8 values with saturated extremes."""
    xq = program.quantize_input(case.calibration[:2])
    extreme = rng.integers(-128, 128, (1, *xq.shape[1:]))
    extreme = np.where(rng.random(extreme.shape) < 0.2, rng.choice([-128, 127], extreme.shape),
                       extreme)
    return np.concatenate([xq, extreme.astype(np.int8)])


def _compare(program, device, xq) -> str:
    """'' if the RTL agrees with the golden model on every layer and with the cycle model,
    else what differs."""
    want = program.run_reference(xq, return_all=True)
    got = device.run(program, xq, return_all=True)
    for i, (w, g) in enumerate(zip(want, got)):
        name = program.layers[i].name
        if g is None:
            return f"layer {i} ('{name}') was not read back"
        g = g.reshape(w.shape)
        if not np.array_equal(w, g):
            return (f"layer {i} ('{name}') differs from the golden model in "
                    f"{int((w != g).sum())} of {w.size} values")
    stats = device.last_run
    return timeline.mismatch(program, stats.layer_cycles, stats.cycles)


def _round_trip(program, xq) -> str:
    from .runtime.fileformat import load_program
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.stp"
        program.save(path)
        loaded = load_program(path)
    if [d for _, d in loaded.steps] != [d for _, d in program.steps]:
        return "save/load changed the descriptors"
    if not all(np.array_equal(a, b) for a, b in zip(loaded.run_reference(xq, return_all=True),
                                                    program.run_reference(xq, return_all=True))):
        return "save/load changed the golden model's outputs"
    return ""


def run_case(name: str, seed: int, case: int, device) -> Outcome:
    """Generate, compile and check one case on ``device`` (opened for config ``name``)."""
    from .compiler import compile as compile_model
    config = config_named(name)
    out = Outcome(name, seed, case, "fail")
    try:
        generated = random_case(config, seed, case, name in STREAMED)
    except Exception:
        out.reason = "generator error: " + traceback.format_exc(limit=-1).strip().splitlines()[-1]
        return out
    out.recipe = generated.recipe
    try:
        program = compile_model(generated.model, generated.calibration, config,
                                generated.method, timing=STREAMED.get(name),
                                streaming="always" if name in STREAMED else "auto")
    except PlacementError as exc:       # the compiler's own graph must be placeable
        out.reason = f"compile raised {type(exc).__name__}: {exc}"
        return out
    except DOCUMENTED as exc:
        out.status, out.reason, out.detail = "refused", refusal_reason(exc), str(exc)
        return out
    except Exception as exc:            # a refusal of a supported layer, or a crash
        out.reason = f"compile raised {type(exc).__name__}: {exc}"
        return out
    out.layers = len(program.layers)
    xq = _inputs(program, generated, np.random.default_rng([seed, case, 1]))
    try:
        problem = _compare(program, device, xq) or _round_trip(program, xq)
    except Exception as exc:            # DeviceError, DeviceTimeout or a crash: all failures
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        out.reason = problem
    else:
        out.status = "pass"
    return out


@dataclass
class Summary:
    outcomes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list:
        return [o for o in self.outcomes if o.status == "fail"]

    def line(self) -> str:
        n = len(self.outcomes)
        per = Counter(o.config for o in self.outcomes)
        passed = sum(o.status == "pass" for o in self.outcomes)
        refused = Counter(o.reason for o in self.outcomes if o.status == "refused")
        reasons = ", ".join(f"{r} {k}" for r, k in refused.most_common()) or "none"
        configs = ", ".join(f"{c} {k}" for c, k in sorted(per.items()))
        return (f"fuzz: {n} nets ({configs}) in {self.seconds:.0f} s: {passed} compiled and "
                f"bit-exact on every layer, {sum(refused.values())} refused for documented "
                f"limits ({reasons}), {len(self.failures)} failures")


def fuzz(configs, seed: int, nets: int | None = None, seconds: float | None = None,
         log=None, devices: dict | None = None) -> Summary:
    """Run cases ``0, 1, ...`` of ``seed`` on each configuration in turn until ``nets`` cases
    per configuration or ``seconds`` in all; ``log`` gets each failure's line."""
    summary, start = Summary(), time.monotonic()
    devices = {} if devices is None else devices
    case = 0
    try:
        while True:
            for name in configs:
                if name not in devices:
                    devices[name] = open_model(name)
                outcome = run_case(name, seed, case, devices[name])
                summary.outcomes.append(outcome)
                if outcome.status == "fail" and log:
                    log(outcome.line())
            case += 1
            summary.seconds = time.monotonic() - start
            if nets is not None and case >= nets:
                break
            if seconds is not None and summary.seconds >= seconds:
                break
    finally:
        summary.seconds = time.monotonic() - start
    return summary
