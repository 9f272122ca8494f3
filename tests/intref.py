"""An integer reference for `QLayer`, written independently of the golden model: plain PyTorch
int64 tensor ops (shifted slices and integer matrix products, no float arithmetic)."""

import torch
import torch.nn.functional as F


def _pad(x, ph, pw, value):
    return F.pad(x, (pw, pw, ph, ph), value=value) if ph or pw else x


def _window_slices(x, kernel, stride, padding, value):
    """Yield (ky, kx, slice) for every kernel offset; slice is N x C x OH x OW."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = _pad(x, ph, pw, value)
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, xp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]


def requant(acc, mult, shift, lo, hi):
    mult = torch.as_tensor(mult, dtype=torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64)
    rounded = torch.bitwise_right_shift(acc * mult + torch.bitwise_left_shift(
        torch.ones_like(shift), shift - 1), shift)
    return rounded.clamp(lo, hi)


def layer(layer, x, *others):
    """Reference output (int64 tensor N x out_shape) of one QLayer on int8 numpy input ``x``
    (and, for an add or a concatenation, its other inputs)."""
    n = x.shape[0]
    if layer.op == "concat":
        parts = [torch.from_numpy(a.astype("int64")).reshape(n, -1, *layer.out_shape[1:])
                 for a in (x, *others)]
        return torch.cat(parts, 1).reshape(n, *layer.out_shape)
    t = torch.from_numpy(x.astype("int64"))
    if layer.op == "conv":
        t = t.reshape(n, -1, *layer.in_shape[1:])
        t = t[:, layer.channel_offset:layer.channel_offset + layer.in_shape[0]]
    t = t.reshape(n, *layer.in_shape)
    if layer.op == "add":
        b = torch.from_numpy(others[0].astype("int64")).reshape(n, *layer.in_shape)
        total = t * layer.add_mult[0] + b * layer.add_mult[1]
        return requant(total, 1, layer.add_shift, layer.lo, layer.hi).reshape(n, *layer.out_shape)
    if layer.op == "flatten":
        return t.reshape(n, *layer.out_shape)
    if layer.op == "conv":
        w = torch.from_numpy(layer.weight.astype("int64"))
        acc = None
        for ky, kx, sl in _window_slices(t, layer.kernel, layer.stride, layer.padding, 0):
            part = torch.einsum("nchw,oc->nohw", sl, w[:, :, ky, kx])
            acc = part if acc is None else acc + part
        acc = acc + torch.from_numpy(layer.bias.astype("int64"))[None, :, None, None]
        t = requant(acc, torch.from_numpy(layer.mult)[None, :, None, None],
                    torch.from_numpy(layer.shift)[None, :, None, None], layer.lo, layer.hi)
    else:
        t = t.clamp(layer.lo, layer.hi)
    if layer.pool == "max":
        out = None
        for _, _, sl in _window_slices(t, layer.pool_kernel, layer.pool_stride,
                                       layer.pool_padding, -128):
            out = sl if out is None else torch.maximum(out, sl)
        t = out
    elif layer.pool == "avg":
        total = None
        for _, _, sl in _window_slices(t, layer.pool_kernel, layer.pool_stride,
                                       layer.pool_padding, 0):
            total = sl if total is None else total + sl
        t = requant(total, layer.pool_mult, layer.pool_shift, layer.lo, layer.hi)
    return t.reshape(n, *layer.out_shape)
