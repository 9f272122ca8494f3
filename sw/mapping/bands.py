"""Row bands: a layer's output computed a band of rows at a time from a band of its input rows.

`band` finds, for output rows ``[o0, o1)`` of a layer, a layer the hardware can run on input
rows ``[a, a + rows)`` alone whose output holds the wanted rows from its row ``skip`` on: the
same convolution and pooling with its own top padding (the descriptor's pads are symmetric,
with one extra row at the bottom allowed), so a middle band reads the rows above it instead of
zeros, and a band at the top or bottom pads where the map does. A band may compute a few rows
it does not need (``skip`` above, some below); they are never stored.

The search is exact: for each candidate it follows every kernel tap of every convolution row
and every pooling window's rows back to the input rows they read, and accepts the candidate
only if each wanted output row reads just what the layer's row reads (the same input row for
each tap, zero where the layer pads) and no unwanted row enters a wanted pooling window.
Element-wise layers (adds) and upsampling copies map rows directly.
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
    """Output rows ``rows`` of a layer, computed by ``layer`` from input rows ``in_rows``
    (first, stop); its output's rows ``skip .. skip + rows[1] - rows[0]`` are the wanted
    ones."""
    rows: tuple
    in_rows: tuple
    layer: QLayer
    skip: int

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


def band(layer: QLayer, o0: int, o1: int, depthwise: bool = False) -> Band | None:
    """The band of output rows ``[o0, o1)`` of ``layer`` (``depthwise``: on the depthwise
    datapath, whose padding must stay below the kernel), or None if no band the hardware
    can run computes them alone."""
    if layer.op == "add":
        c, h, w = layer.in_shape
        return Band((o0, o1), (o0, o1), layer.replace(in_shape=(c, o1 - o0, w),
                                                      out_shape=(c, o1 - o0, w)), 0)
    if layer.upsample != (1, 1):
        f = layer.upsample[0]
        if o0 % f or o1 % f and o1 != layer.out_shape[1]:
            return None
        c, h, w = layer.in_shape
        a, b = o0 // f, -(-o1 // f)
        return Band((o0, o1), (a, b), layer.replace(in_shape=(c, b - a, w),
                                                    out_shape=(c, (b - a) * f,
                                                               layer.out_shape[2])), 0)
    c, h, w = layer.in_shape
    kh, (s, _), (ph, pw), (eh, ew) = layer.kernel[0], layer.stride, layer.padding, \
        layer.pad_extra
    pool = layer.pool != "none"
    pk, ps, pp = (layer.pool_kernel[0], layer.pool_stride[0], layer.pool_padding[0]) \
        if pool else (1, 1, 0)
    found = _search(h, kh, s, ph, eh, pool, pk, ps, pp, depthwise, o0, o1)
    if found is None:
        return None
    a, rows, t, e, ppt, skip, nconv, nout = found
    o, _, ow = layer.out_shape
    part = layer.replace(in_shape=(c, rows, w), padding=(t, pw), pad_extra=(e, ew),
                         pool_padding=(ppt, layer.pool_padding[1]), out_shape=(o, nout, ow))
    return Band((o0, o1), (a, a + rows), part, skip)


def split(layer: QLayer, count: int, depthwise: bool = False) -> list[Band]:
    """``layer``'s output rows in bands of ``count`` rows (the last may have fewer);
    `MappingError` if some band cannot be computed alone."""
    oh = layer.out_shape[1]
    bands = []
    for o0 in range(0, oh, count):
        found = band(layer, o0, min(oh, o0 + count), depthwise)
        if found is None:
            raise MappingError(f"layer '{layer.name}': output rows {o0} to "
                               f"{min(oh, o0 + count) - 1} cannot be computed as a band")
        bands.append(found)
    return bands
