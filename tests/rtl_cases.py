"""Random layers and chains that the hardware supports, for RTL-vs-golden tests."""

import numpy as np

from striate.sw.ir import numerics
from striate.sw.ir.graph import QGraph, QLayer
from striate.sw.ir.kernels import out_size


def _pool(rng, c, h, w):
    kind = rng.choice(["none", "max", "avg"], p=[0.4, 0.35, 0.25])
    if kind == "none" or min(h, w) < 2:
        return dict(pool="none"), (c, h, w)
    if rng.random() < 0.15:                                   # global average pool
        kh, kw = h, w
        mult, shift = numerics.quantize_multiplier(1.0 / (kh * kw))
        return dict(pool="avg", pool_kernel=(kh, kw), pool_stride=(kh, kw), pool_mult=mult,
                    pool_shift=shift), (c, 1, 1)
    kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    mult, shift = (numerics.quantize_multiplier(1.0 / (kh * kw)) if kind == "avg" else (0, 0))
    oh, ow = out_size(h, kh, stride[0], padding[0]), out_size(w, kw, stride[1], padding[1])
    return dict(pool=str(kind), pool_kernel=(kh, kw), pool_stride=stride, pool_padding=padding,
                pool_mult=mult, pool_shift=shift), (c, oh, ow)


def random_layer(rng, in_shape, max_channels=12, max_width=12, name="layer"):
    """A random convolution (kernel 1-7, non-square, stride 1-2, zero padding) with a random
    fused clamp and pooling stage and, three times in ten, a random table, on ``in_shape``."""
    c, h, w = in_shape
    o = int(rng.integers(1, max_channels + 1))
    kh, kw = int(rng.integers(1, min(7, h + 2) + 1)), int(rng.integers(1, min(7, w + 2) + 1))
    ph, pw = int(rng.integers(0, min(3, kh - 1) + 1)), int(rng.integers(0, min(3, kw - 1) + 1))
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    ch, cw = out_size(h, kh, stride[0], ph), out_size(w, kw, stride[1], pw)
    pool, out_shape = _pool(rng, o, ch, cw)
    lo = int(rng.choice([-128, 0, rng.integers(-128, 1)]))
    hi = int(rng.choice([127, rng.integers(max(lo, 1), 128)]))
    fan_in = c * kh * kw
    # Shifts that keep outputs spread over int8 for this fan-in (the rest saturates).
    base = 31 + int(np.log2(max(1.0, np.sqrt(fan_in) * 127 * 64 / 100)))
    return QLayer(
        name=name, op="conv", in_shape=tuple(in_shape), out_shape=out_shape, out_scale=1.0,
        weight=rng.integers(-127, 128, (o, c, kh, kw)).astype(np.int8),
        bias=rng.integers(-20000, 20000, o).astype(np.int32),
        mult=rng.integers(1 << 30, 1 << 31, o).astype(np.int64),
        shift=rng.integers(base - 2, base + 3, o).astype(np.int64),
        stride=stride, padding=(ph, pw), lo=lo, hi=hi, **pool,
        table=rng.integers(-128, 128, 256).astype(np.int8) if rng.random() < 0.3 else None)


def random_chain(seed, layers=3, max_channels=12, max_width=12):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, max_channels + 1)), int(rng.integers(3, max_width + 1)),
             int(rng.integers(3, max_width + 1)))
    chain = []
    for i in range(layers):
        layer = random_layer(rng, shape if not chain else chain[-1].out_shape, max_channels,
                             max_width, name=f"rand{i}")
        chain.append(layer)
    return QGraph(layers=tuple(chain), input_shape=shape, input_scale=1.0,
                  output_shape=chain[-1].out_shape), rng


def random_inputs(rng, n, shape):
    x = rng.integers(-128, 128, (n, *shape))
    return np.where(rng.random(x.shape) < 0.1, rng.choice([-128, 0, 127], x.shape), x) \
        .astype(np.int8)


def check_on_rtl(device, program, xq):
    """Run ``program`` on ``device`` reading back every layer: each equals the golden model
    (``np.array_equal``); the counters equal the cycle model (exactly for layers that cannot
    stall, within its bound for the others; 0 for a concatenation, which has no descriptor)
    and add up to CYCLES. Returns the run's counters."""
    from striate.sw.golden import timeline
    got = device.run(program, xq, return_all=True)
    for layer, a, b in zip(program.layers, got, program.run_reference(xq, return_all=True)):
        np.testing.assert_array_equal(a, b.reshape(a.shape), err_msg=layer.name)
    stats = device.last_run
    problem = timeline.mismatch(program, stats.layer_cycles, stats.cycles)
    assert not problem, problem
    assert all((measured == 0) == (layer.op == "concat")
               for layer, measured in zip(program.layers, stats.layer_cycles))
    return stats


def check_end_to_end(device, program, model, x, path, tolerance=0.05):
    """The golden model within ``tolerance`` of ``model`` in float (relative to its largest
    output) on inputs ``x``, every layer bit-exact on ``device``, and the program saved to
    ``path`` loading back with the same golden results. Returns the loaded program."""
    import torch
    import striate
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    xq = program.quantize_input(x)
    y = program.run_reference(xq) * program.output_scale
    assert np.abs(y - ref.reshape(y.shape)).max() <= tolerance * np.abs(ref).max()
    check_on_rtl(device, program, xq)
    program.save(path)
    loaded = striate.load_program(path)
    np.testing.assert_array_equal(loaded.run_reference(xq), program.run_reference(xq))
    return loaded
