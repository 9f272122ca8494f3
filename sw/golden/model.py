"""The NumPy golden model: exact integer execution of a `QGraph` (see `striate.sw.ir.graph` for
the semantics)."""

from __future__ import annotations

import numpy as np

from ..arguments import as_array, check_flag, dims, dtype_of
from ..errors import StriateError
from ..ir import numerics, tables
from ..ir.graph import INPUT, QGraph, QLayer, map_shape
from ..ir.kernels import conv2d, max_pool, sum_pool, windows


def run_layer(layer: QLayer, *inputs: np.ndarray) -> np.ndarray:
    """Run one layer on its int8 ``N x ...`` inputs (in ``layer.inputs`` order); return int8
    ``N x out_shape``."""
    x = inputs[0]
    n = x.shape[0]
    if layer.op == "concat":
        parts = [a.reshape(n, -1, *layer.out_shape[1:]) for a in inputs]
        return np.concatenate(parts, axis=1).reshape(n, *layer.out_shape)
    c, h, w = layer.in_shape
    if layer.op == "conv" and x.size != n * c * h * w:  # a part of a split reads a slice
        x = x.reshape(n, -1, h, w)[:, layer.channel_offset:layer.channel_offset + c]
    x = x.reshape(n, *layer.in_shape)
    if layer.upsample != (1, 1):
        x = x.repeat(layer.upsample[0], axis=2).repeat(layer.upsample[1], axis=3)
    if layer.op == "flatten":
        return x.reshape(n, *layer.out_shape)
    if layer.op == "add":
        b = inputs[1].reshape(n, *layer.in_shape)
        return numerics.add(x, b, *layer.add_mult, layer.add_shift, layer.lo,
                            layer.hi).reshape(n, *layer.out_shape)
    if layer.op == "conv":
        acc = np.rint(conv2d(x, layer.weight, layer.stride, layer.padding, layer.pad_extra)) \
            .astype(np.int64)
        acc += layer.bias.astype(np.int64)[None, :, None, None]
        t = numerics.requantize(acc, layer.mult[:, None, None], layer.shift[:, None, None],
                                layer.lo, layer.hi)
    else:
        t = np.clip(x, layer.lo, layer.hi).astype(np.int8)
    if layer.pool == "max":
        t = max_pool(t, layer.pool_kernel, layer.pool_stride, layer.pool_padding,
                     numerics.INT8_MIN)
    elif layer.pool == "avg":
        sums = sum_pool(t.astype(np.int64), layer.pool_kernel, layer.pool_stride,
                        layer.pool_padding)
        t = numerics.requantize(sums, layer.pool_mult, layer.pool_shift, layer.lo, layer.hi)
    if layer.table is not None:
        t = tables.lookup(t, layer.table)
    return np.ascontiguousarray(t, dtype=np.int8).reshape(n, *layer.out_shape)


def im2col(xq: np.ndarray, spec: tuple) -> np.ndarray:
    """Unfold ``N x C x H x W`` into ``N x C*KH*KW x OH x OW`` (channel order ``c, ky, kx``;
    padding reads 0) for ``spec = (kh, kw, sh, sw, ph, pw)``, or ``(..., eh, ew)`` with ``eh``
    and ``ew`` more padding rows and columns at the bottom and right."""
    kh, kw, sh, sw, ph, pw, *extra = spec
    if any(extra):
        xq = np.pad(xq, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    cols = windows(xq, (kh, kw), (sh, sw), (ph, pw), 0)        # N C OH OW KH KW
    n, c, oh, ow = cols.shape[:4]
    return np.ascontiguousarray(cols.transpose(0, 1, 4, 5, 2, 3)).reshape(n, c * kh * kw, oh, ow)


def layer_inputs(graph: QGraph, xq: np.ndarray) -> np.ndarray:
    """What the layers reading the network input read for the int8 network input ``xq`` (after
    any host unfold)."""
    if not graph.input_im2col:
        return xq
    return im2col(xq.reshape(len(xq), *map_shape(graph.input_shape)), graph.input_im2col)


def run_graph(graph: QGraph, xq, return_all: bool = False):
    """Run the whole graph on an int8 ``N x input_shape`` batch.

    Returns the int8 output shaped ``N x graph.output_shape``, or with ``return_all`` the list of
    every layer's int8 output in layer order (the output layer's shaped like the plain return
    value). An empty batch (``N = 0``) gives empty outputs of those shapes.
    """
    return_all = check_flag(return_all, "return_all")
    a = as_array(xq)
    if a is None or a.dtype != np.int8:
        raise StriateError(f"golden model input must be int8, not {dtype_of(xq)}")
    xq = a
    if xq.ndim != 1 + len(graph.input_shape) or tuple(xq.shape[1:]) != tuple(graph.input_shape):
        raise StriateError(f"golden model input must be N x {dims(graph.input_shape)}, not "
                           f"{dims(xq.shape)}")
    tensors = {INPUT: layer_inputs(graph, xq)}
    for layer in graph.layers:
        tensors[layer.name] = run_layer(layer, *(tensors[name] for name in layer.inputs))
    final = tensors[graph.output].reshape(len(xq), *graph.output_shape)
    if return_all:
        return [final if layer.name == graph.output else tensors[layer.name]
                for layer in graph.layers]
    return final
