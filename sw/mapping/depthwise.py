"""Depthwise convolutions on the depthwise datapath (`AcceleratorConfig.depthwise_kernel`).

A depthwise layer (output channel ``c`` reads input channel ``c`` only) keeps most of the PE
array busy only if the array's lanes multiply different kernel taps: the hardware
(`striate.hw.core.dwwindow`) walks each channel group's input map in raster order, one word
(``pe_in`` channels of a pixel) per cycle, keeps the last ``k - 1`` rows in a line buffer and a
``k x k`` window of words in registers, and gives PE row ``t * pe_in + ch`` the window's row
``t`` of channel ``ch`` (lane ``c``: column ``c``). The row sums of one channel add up to its
output, one output pixel of ``pe_in`` channels per cycle: ``k * k * pe_in`` of the array's
``pe_out * pe_in`` multipliers (9 * 4 of 64 for 3x3 on the default array).

Walk (`walk`): rows ``0 .. (out_h - 1) * s_h + k_h - 1 - p_h`` and the same columns; the output
at ``(oy, ox)`` is complete at row ``oy * s_h + k_h - 1 - p_h`` and column
``ox * s_w + k_w - 1 - p_w``. Positions past the map read as zero (bottom and right padding);
window rows and columns before the map's first (top and left padding) are zero. A smaller
kernel sits in the window's last rows and columns, zero weights before it.

Reading ahead (`reads_ahead`): a position past the map reads no word of its own, and column 0
of a row (row 0 of a group) completes no output when ``k - 1 - p >= 1``. So where a row ends past
the map, its last position reads the next row's column 0 and the walk skips that position;
where a group's last row lies past the map (and the walk has at least three rows), it reads
the next group's row 0 (and its last position that group's row 1, column 0) and the next group
starts at row 1. The window zeroes
the newest row or column of an output past the map. A 3x3 layer with padding 1 then spends one
cycle per output pixel, but for the first group's row 0 and the layer's first position.
"""

from __future__ import annotations

import numpy as np

from ..config import AcceleratorConfig
from ..ir.graph import QLayer
from .layout import groups


def runs_depthwise(layer: QLayer, config: AcceleratorConfig) -> bool:
    """Whether ``layer`` runs on the depthwise datapath of ``config``: a depthwise convolution
    (``groups`` = input = output channels) with its kernel within ``depthwise_kernel``, padding
    below the kernel on each side and no pooling."""
    k = config.depthwise_kernel
    if layer.op != "conv" or not k:
        return False
    c, o = layer.in_shape[0], layer.out_shape[0]
    return (layer.groups == c == o and layer.pool == "none" and max(layer.kernel) <= k
            and all(p < kernel for p, kernel in zip(layer.padding, layer.kernel)))


def walk(layer: QLayer) -> tuple[int, int]:
    """Rows and columns of the input the walk visits per channel group (see the module
    docstring)."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    _, oh, ow = layer.out_shape
    return (oh - 1) * sh + kh - ph, (ow - 1) * sw + kw - pw


def reads_ahead(layer: QLayer) -> tuple[bool, bool]:
    """Whether the walk reads the next group's row 0 in each group's last row and the next
    row's column 0 at each row's end (see the module docstring)."""
    (kh, kw), (ph, pw) = layer.kernel, layer.padding
    rows, cols = walk(layer)
    _, h, w = layer.in_shape
    # with two walk rows a group would skip the row that reads the next one's first word
    return rows > h and ph + 1 < kh and rows >= 3, cols > w and pw + 1 < kw


def items(layer: QLayer, config: AcceleratorConfig) -> int:
    """Cycles of work: one per walk position of each channel group, less the positions read
    ahead (`reads_ahead`)."""
    rows, cols = walk(layer)
    skip_row, skip_col = reads_ahead(layer)
    cols -= skip_col
    return groups(layer.in_shape[0], config.pe_in) * (rows - skip_row) * cols \
        + skip_row * cols + skip_col


def pack_weights(layer: QLayer, config: AcceleratorConfig) -> np.ndarray:
    """A depthwise layer's weights as uint8 bytes in weight memory order: one word per channel
    group, byte ``(t * pe_in + ch) * pe_in + c`` the weight of channel ``g * pe_in + ch`` at
    window row ``t`` and column ``c`` (the kernel in the last rows and columns of the
    ``depthwise_kernel`` square)."""
    po, pi, k = config.pe_out, config.pe_in, config.depthwise_kernel
    c = layer.in_shape[0]
    kh, kw = layer.kernel
    g = groups(c, pi)
    taps = np.zeros((g * pi, po // pi, pi), np.int8)     # channel, window row, window column
    diagonal = layer.weight[np.arange(c), np.arange(c)]  # C x KH x KW
    taps[:c, k - kh:k, k - kw:k] = diagonal
    words = taps.reshape(g, pi, po // pi, pi).transpose(0, 2, 1, 3)   # g t ch c
    return np.ascontiguousarray(words).view(np.uint8).reshape(-1)
