"""Tiles of rows and columns: a layer's output computed a tile at a time from a tile of its
input.

`band` finds, for output rows ``[o0, o1)`` (and columns ``[c0, c1)``) of a layer, a layer the
hardware can run on input rows ``[a, a + rows)`` (and columns) alone whose output holds the
wanted rows from its row ``skip`` on (columns from ``skip_col``): the same convolution and
pooling with its own top (left) padding (the descriptor's pads are symmetric, with one extra row
at the bottom and column at the right allowed), so a middle tile reads the rows above it
instead of zeros, and a tile at an edge pads where the map does. A tile may compute a few rows
or columns it does not need (``skip`` before, some after); they are never stored. Rows and
columns are independent (kernels, strides, padding and pooling are separable), so a tile is a
row band crossed with a column band, each found by the same search.

The search is exact: for each candidate it follows every kernel tap of every convolution row
and every pooling window's rows back to the input rows they read, and accepts the candidate
only if each wanted output row reads just what the layer's row reads (the same input row for
each tap, zero where the layer pads) and no unwanted row enters a wanted pooling window.
Element-wise layers (adds) and upsampling copies map rows and columns directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..errors import MappingError
from ..ir.graph import QLayer
from ..ir.kernels import out_size

MAX_PAD = 7             # the descriptor's pad fields (3 bits)


@dataclass(frozen=True, eq=False)
class Band:
    """Output rows ``rows`` and columns ``cols`` of a layer, computed by ``layer`` from input
    rows ``in_rows`` and columns ``in_cols`` (first, stop); its output's rows ``skip .. skip +
    rows[1] - rows[0]`` and columns ``skip_col ..`` are the wanted ones."""
    rows: tuple
    in_rows: tuple
    layer: QLayer
    skip: int
    cols: tuple = None
    in_cols: tuple = None
    skip_col: int = 0

    @property
    def count(self) -> int:
        return self.rows[1] - self.rows[0]


def _conv_taps(c: int, s: int, p: int, k: int, top: int, size: int) -> tuple:
    """The input row each tap of conv row ``c`` reads (None: padding), for a map of ``size``
    rows starting at input row ``top``."""
    return tuple(top + r if 0 <= r < size else None for r in range(c * s - p, c * s - p + k))


def _pool_rows(o: int, s: int, p: int, k: int, size: int) -> frozenset:
    return frozenset(c for c in range(o * s - p, o * s - p + k) if 0 <= c < size)


@lru_cache(maxsize=4096)
def _search(h, kh, s, ph, eh, pool, pk, ps, pp, depthwise, o0, o1):
    """(a, rows, t, e, ppt, skip, conv rows, out rows) of the cheapest band, or None."""
    ch = out_size(h + eh, kh, s, ph)
    want = {o: (_pool_rows(o, ps, pp, pk, ch) if pool else frozenset((o,)))
            for o in range(o0, o1)}
    needed = set().union(*want.values())
    if not needed:
        return None
    lo, n = min(needed), max(needed) + 1 - min(needed)     # conv rows computed right
    taps = [_conv_taps(c, s, ph, kh, 0, h) for c in range(lo, lo + n)]
    real = [r for tap in taps for r in tap if r is not None]
    first, stop = (min(real), max(real) + 1) if real else (0, 1)
    best = None
    for a in range(max(0, first - MAX_PAD), first + 1):
        rows = stop - a
        for t in range(0, min(MAX_PAD, kh - 1 if depthwise else MAX_PAD) + 1):
            # band conv row j reads band rows j*s - t + i: conv row lo must be some j0
            if (lo * s - ph - a + t) % s or lo * s - ph - a + t < 0:
                continue
            j0 = (lo * s - ph - a + t) // s
            for e in (0, 1):
                nconv = out_size(rows + e, kh, s, t)
                if nconv < j0 + n or any(_conv_taps(j0 + i, s, t, kh, a, rows) != tap
                                         for i, tap in enumerate(taps)):
                    continue
                found = _pooled(want, lo, n, j0, nconv, pk, ps, pp, o0) if pool \
                    else (j0 + o0 - lo, nconv, 0)
                if found is None:
                    continue
                skip, nout, ppt = found
                cost = (nconv, rows)
                if best is None or cost < best[0]:
                    best = (cost, (a, rows, t, e, ppt, skip, nconv, nout))
    return best[1] if best else None


def _pooled(want, lo, n, j0, nconv, pk, ps, pp, o0):
    """(skip, out rows, pool pad) of a pooling over the band's ``nconv`` conv rows (band rows
    ``j0 .. j0 + n`` are the layer's conv rows ``lo ..``, the others unwanted) whose rows
    ``skip ..`` pool exactly the layer's rows ``want`` (from ``o0`` on), or None."""
    for ppt in range(0, min(MAX_PAD, pk // 2) + 1):
        nout = out_size(nconv, pk, ps, ppt)
        for skip in range(0, nout - len(want) + 1):
            def same(i, o):
                rows = _pool_rows(skip + i, ps, ppt, pk, nconv)
                return all(j0 <= j < j0 + n for j in rows) and \
                    frozenset(j - j0 + lo for j in rows) == want[o]
            if all(same(i, o0 + i) for i in range(len(want))):
                return skip, nout, ppt
    return None


@dataclass(frozen=True)
class _Span:
    """How one axis of a tile is computed: input positions ``first .. first + size``, the
    tile's padding before them, its extra padding after them, its pooling padding, the
    unwanted outputs before the wanted ones (``skip``) and its output size."""
    first: int
    size: int
    pad: int
    extra: int
    pool_pad: int
    skip: int
    out: int


def _span(layer: QLayer, axis: int, o0: int, o1: int, depthwise: bool) -> _Span | None:
    """Output positions ``[o0, o1)`` along ``axis`` (0: rows, 1: columns), or None."""
    pad, extra, pool_pad = layer.padding[axis], layer.pad_extra[axis], layer.pool_padding[axis]
    if axis == 1 and (o0, o1) == (0, layer.out_shape[2]):     # all columns: the layer's own
        return _Span(0, layer.in_shape[1 + axis], pad, extra, pool_pad, 0, o1)
    if layer.op == "add":
        return _Span(o0, o1 - o0, pad, extra, pool_pad, 0, o1 - o0)
    if layer.upsample != (1, 1):
        f = layer.upsample[axis]
        if o0 % f or o1 % f and o1 != layer.out_shape[1 + axis]:
            return None
        a, b = o0 // f, -(-o1 // f)
        return _Span(a, b - a, pad, extra, pool_pad, 0, (b - a) * f)
    pool = layer.pool != "none"
    pk, ps, pp = (layer.pool_kernel[axis], layer.pool_stride[axis], pool_pad) if pool \
        else (1, 1, 0)
    found = _search(layer.in_shape[1 + axis], layer.kernel[axis], layer.stride[axis], pad,
                    extra, pool, pk, ps, pp, depthwise, o0, o1)
    if found is None:
        return None
    a, size, t, e, ppt, skip, _, nout = found
    return _Span(a, size, t, e, ppt, skip, nout)


def band(layer: QLayer, o0: int, o1: int, depthwise: bool = False,
         cols: tuple | None = None) -> Band | None:
    """The tile of output rows ``[o0, o1)`` and columns ``cols`` (first, stop; None: all) of
    ``layer`` (``depthwise``: on the depthwise datapath, whose padding must stay below the
    kernel), or None if no tile the hardware can run computes them alone."""
    cols = cols or (0, layer.out_shape[2])
    r, c = _span(layer, 0, o0, o1, depthwise), _span(layer, 1, *cols, depthwise)
    if r is None or c is None:
        return None
    channels = layer.in_shape[0]
    out = layer.out_shape[0]
    in_shape = (channels, r.size, c.size)
    if layer.op == "add" or layer.upsample != (1, 1):
        part = layer.replace(in_shape=in_shape, out_shape=(out, r.out, c.out))
    else:
        part = layer.replace(in_shape=in_shape, padding=(r.pad, c.pad),
                             pad_extra=(r.extra, c.extra), pool_padding=(r.pool_pad, c.pool_pad),
                             out_shape=(out, r.out, c.out))
    return Band((o0, o1), (r.first, r.first + r.size), part, r.skip, cols,
                (c.first, c.first + c.size), c.skip)


def split(layer: QLayer, count: int, depthwise: bool = False,
          width: int | None = None) -> list[Band]:
    """``layer``'s output in tiles of ``count`` rows and ``width`` columns (None: all), row
    by row (the last row and column may have fewer); `MappingError` if some tile cannot be
    computed alone."""
    _, oh, ow = layer.out_shape
    width = width or ow
    tiles = []
    for o0 in range(0, oh, count):
        for c0 in range(0, ow, width):
            rows, cols = (o0, min(oh, o0 + count)), (c0, min(ow, c0 + width))
            found = band(layer, *rows, depthwise, cols)
            if found is None:
                where = "" if width == ow else f", columns {cols[0]} to {cols[1] - 1}"
                raise MappingError(f"layer '{layer.name}': output rows {rows[0]} to "
                                   f"{rows[1] - 1}{where} cannot be computed as a tile")
            tiles.append(found)
    return tiles
