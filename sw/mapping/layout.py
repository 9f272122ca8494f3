"""Bit-level layout of what the host writes into and reads from the accelerator's memories.

All words are little-endian byte vectors; lane ``i`` of a word is byte ``i``.

* Activation word (``pe_in`` bytes): channels ``g*pe_in .. g*pe_in + pe_in - 1`` of one pixel.
  A ``C x H x W`` map is stored as words ``[g][y][x]`` (``g`` the channel group); lanes past ``C``
  hold 0.
* Weight word (``pe_out * pe_in`` bytes): byte ``o * pe_in + i`` is
  ``W[og*pe_out + o, g*pe_in + i, ky, kx]`` (0 outside the layer). A layer's words run
  ``[og][ky][kx][g]``, the order the window generator consumes them. A layer on the depthwise
  datapath has one word per channel group instead (`depthwise.pack_weights`). A layer with
  merged lanes (`merges`) has no word of its last group at odd ``kx``: lanes ``pe_in / 2`` on
  of the last group's word at even ``kx`` hold the lower lanes of column ``kx + 1``'s.
* Parameter entry (four 32-bit words): bias (int32), multiplier (uint32), shift (uint32), 0. A
  parameter memory row holds ``pe_out`` entries, one output channel group; entries past ``O``
  are 0.
"""

from __future__ import annotations

import numpy as np

from ..config import AcceleratorConfig
from ..ir.graph import QLayer


def groups(n: int, lanes: int) -> int:
    """Lane groups (words) that ``n`` channels need: ``ceil(n / lanes)``."""
    return -(-n // lanes)


def writes_per_pixel(config: AcceleratorConfig) -> int:
    """Bank words the writer stores per output pixel of ``pe_out`` channels (at least one)."""
    return max(1, config.pe_out // config.pe_in)


def pack_activation(x: np.ndarray, config: AcceleratorConfig) -> np.ndarray:
    """int8 ``C x H x W`` -> uint8 bytes in bank order (``act_bytes`` long)."""
    c, h, w = x.shape
    g = groups(c, config.pe_in)
    padded = np.zeros((g * config.pe_in, h, w), np.int8)
    padded[:c] = x
    words = padded.reshape(g, config.pe_in, h, w).transpose(0, 2, 3, 1)   # g y x lane
    return np.ascontiguousarray(words).view(np.uint8).reshape(-1)


def unpack_activation(data, shape: tuple, config: AcceleratorConfig) -> np.ndarray:
    """Bank bytes -> int8 ``C x H x W`` (inverse of `pack_activation`)."""
    c, h, w = shape
    g = groups(c, config.pe_in)
    raw = np.frombuffer(bytes(data), np.int8, g * config.pe_in * h * w)
    return np.ascontiguousarray(raw.reshape(g, h, w, config.pe_in).transpose(0, 3, 1, 2)
                                .reshape(g * config.pe_in, h, w)[:c])


def doubled(layer: QLayer, config: AcceleratorConfig) -> bool:
    """Whether a convolution's weights and parameters fill both halves of the PE rows, the
    upper half a copy of the lower, so that it may run in pixel pairs (`pairs`): one with at
    most ``pe_out / 2`` output channels on hardware with ``pixel_pairs``. (A tile of it that
    runs unpaired computes the copies too and writes none of them.)"""
    return config.pairs and layer.op == "conv" and layer.out_shape[0] <= config.pe_out // 2


def pairs(layer: QLayer, config: AcceleratorConfig) -> bool:
    """Whether a layer on the convolution datapath runs two neighbouring conv pixels an item
    (`LayerDescriptor.pair`): `doubled`, no upsampling, column stride 1 and an even number of
    columns; without pooling, or with max pooling two columns wide at column stride 2 without
    column padding (a pair is then a pooling window's columns; not with the serial
    requantizer)."""
    _, _, conv_w = layer.conv_shape
    if not doubled(layer, config) or layer.upsample != (1, 1) or layer.stride[1] != 1 \
            or conv_w % 2:
        return False
    if layer.pool == "none":
        return layer.out_shape[2] == conv_w
    # (a stride along an axis of one window is never taken: a file stores it as 1)
    return layer.pool == "max" and not config.serial_scale_bits \
        and layer.pool_kernel[1] == 2 and layer.pool_padding[1] == 0 \
        and layer.out_shape[2] == conv_w // 2 \
        and (layer.pool_stride[1] == 2 or layer.out_shape[2] == 1)


def merges(layer: QLayer, config: AcceleratorConfig) -> bool:
    """Whether a convolution on the convolution datapath may read its last input channel group
    with merged lanes (`LayerDescriptor.merge`): on hardware with pixel pairs, a layer not in
    pairs (`pairs`) and without upsampling, of a kernel at least two columns wide, whose last
    input channel group holds at most ``pe_in / 2`` channels."""
    if not config.pairs or layer.op != "conv" or pairs(layer, config) \
            or layer.upsample != (1, 1):
        return False
    rest = layer.in_shape[0] % config.pe_in
    return layer.kernel[1] >= 2 and 0 < rest <= config.pe_in // 2


def kernel_items(layer: QLayer, config: AcceleratorConfig, merge: bool = False) -> int:
    """Items (weight words) a convolution on the convolution datapath takes per conv pixel and
    output channel group: kernel positions times input channel groups, less one at each odd
    kernel column with merged lanes (``merge``, `merges`)."""
    kh, kw = layer.kernel
    return kh * (kw * groups(layer.in_shape[0], config.pe_in) - (kw // 2 if merge else 0))


def weight_words(layer: QLayer, config: AcceleratorConfig, merge: bool = False) -> int:
    """Weight words of a convolution on the convolution datapath (`kernel_items` for each
    output channel group)."""
    return groups(layer.out_shape[0], config.pe_out) * kernel_items(layer, config, merge)


def pack_weights(layer: QLayer, config: AcceleratorConfig, merge: bool = False) -> np.ndarray:
    """A convolution layer's weights as uint8 bytes in weight memory order (`doubled`: the
    upper half of the rows a copy of the lower; ``merge``: with merged lanes, `merges`)."""
    po, pi = config.pe_out, config.pe_in
    o, c, kh, kw = layer.weight.shape
    og, g = groups(o, po), groups(c, pi)
    padded = np.zeros((og * po, g * pi, kh, kw), np.int8)
    padded[:o, :c] = layer.weight
    if doubled(layer, config):
        padded[po // 2:po // 2 + o, :c] = layer.weight
    blocks = padded.reshape(og, po, g, pi, kh, kw).transpose(0, 4, 5, 2, 1, 3)  # og ky kx g o i
    if merge:
        half, columns = pi // 2, []
        for kx in range(kw):
            if kx % 2:          # its last group went with column kx - 1
                columns.append(blocks[:, :, kx, :g - 1])
                continue
            column = blocks[:, :, kx].copy()
            if kx + 1 < kw:
                column[:, :, g - 1, :, half:] = blocks[:, :, kx + 1, g - 1, :, :half]
            columns.append(column)
        blocks = np.concatenate(columns, axis=2)    # og ky (kx g) o i
    return np.ascontiguousarray(blocks).view(np.uint8).reshape(-1)


def pack_params(layer: QLayer, config: AcceleratorConfig) -> np.ndarray:
    """A layer's channel parameters as uint32 words: (bias, mult, shift, 0) per channel."""
    o = layer.out_shape[0]
    entries = np.zeros((groups(o, config.pe_out) * config.pe_out, 4), np.uint32)
    entries[:o, 0] = layer.bias.astype(np.int32).view(np.uint32)
    entries[:o, 1] = layer.mult
    entries[:o, 2] = layer.shift
    if doubled(layer, config):
        half = config.pe_out // 2
        entries[half:half + o] = entries[:o]
    return entries.reshape(-1)
