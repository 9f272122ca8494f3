"""The NumPy golden model: exact integer execution of a `QGraph` (see `striate.sw.ir.graph` for
the semantics)."""

from __future__ import annotations

import numpy as np

from ..arguments import as_array, check_flag, dims, dtype_of
from ..errors import StriateError
from ..parallel import cores, map_threads
from ..ir import numerics, tables
from ..ir.graph import INPUT, QGraph, QLayer, map_shape
from ..ir.kernels import float_conv2d, max_pool, sum_pool, windows


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
    pool = layer.pool
    if layer.op == "conv":
        # Adding a channel's bias, requantizing and clamping never decrease a value (M >= 0),
        # so a max pool without padding may come first: the maximum of the results is the
        # result of the maximum, for a fraction of the work.
        first = pool == "max" and not any(layer.pool_padding)
        acc, bound = float_conv2d(x, layer.weight, layer.stride, layer.padding,
                                  layer.pad_extra,
                                  (layer.pool_kernel, layer.pool_stride) if first else None)
        pool = "none" if first else pool
        t = numerics.requantize_sums(acc, bound, layer.bias, layer.mult, layer.shift, layer.lo,
                                     layer.hi).transpose(0, 3, 1, 2)
    else:
        t = np.clip(x, layer.lo, layer.hi).astype(np.int8)
    if pool == "max":
        t = max_pool(t, layer.pool_kernel, layer.pool_stride, layer.pool_padding,
                     numerics.INT8_MIN)
    elif pool == "avg":
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
    # stored channels last (what a convolution reading it wants), seen channels first
    return np.ascontiguousarray(cols.transpose(0, 2, 3, 1, 4, 5)) \
        .reshape(n, oh, ow, c * kh * kw).transpose(0, 3, 1, 2)


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
    step = _images_per_slice(graph)
    workers = WORKERS or cores()
    if len(xq) > step:          # several slices: as many for each thread
        count = -(-len(xq) // step)
        step = -(-len(xq) // (-(-count // workers) * workers))
    slices = map_threads(lambda i: _run_slice(graph, xq[i:i + step], return_all),
                         list(range(0, max(len(xq), 1), step)), workers)
    tensors = [np.concatenate(parts) for parts in zip(*slices)]
    final = tensors[-1].reshape(len(xq), *graph.output_shape)
    if return_all:
        return [final if layer.name == graph.output else t
                for layer, t in zip(graph.layers, tensors[:-1])]
    return final


SLICE_BYTES = 1 << 22   # a batch slice's largest temporaries stay about this size: in cache
WORKERS = None          # threads running slices side by side (None: one a core)


def _images_per_slice(graph: QGraph) -> int:
    """Images run through the whole graph at a time: every layer's temporaries (the int64
    accumulators and the im2col copy) of a slice fit in about `SLICE_BYTES`."""
    per_image = 1
    for layer in graph.layers:
        o, oh, ow = layer.conv_shape
        kh, kw = layer.kernel
        per_image = max(per_image, oh * ow * (8 * o + 4 * layer.in_shape[0] * kh * kw))
    return max(1, SLICE_BYTES // per_image)


def _run_slice(graph: QGraph, xq: np.ndarray, every_layer: bool) -> list:
    """The graph's output on the batch ``xq``; with ``every_layer`` after every layer's
    output in layer order."""
    tensors = {INPUT: layer_inputs(graph, xq)}
    for layer in graph.layers:
        tensors[layer.name] = run_layer(layer, *(tensors[name] for name in layer.inputs))
    kept = [tensors[layer.name] for layer in graph.layers] if every_layer else []
    return kept + [tensors[graph.output]]
