"""The golden model equals an independent integer reference on generated layers and graphs."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import intref
from striate import StriateError
from striate.sw.golden import model as golden
from striate.sw.ir import kernels, numerics
from striate.sw.ir.graph import INPUT, QGraph, QLayer
from striate.sw.ir.kernels import out_size

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def pools(draw, c, h, w):
    """A pooling stage that fits a c x h x w map: (kind, kernel, stride, padding, mult, shift)."""
    kind = draw(st.sampled_from(["none", "max", "avg"]))
    if kind == "none":
        return dict(pool="none"), (c, h, w)
    kh = draw(st.integers(1, min(h, 4)))
    kw = draw(st.integers(1, min(w, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    oh, ow = out_size(h, kh, stride[0], padding[0]), out_size(w, kw, stride[1], padding[1])
    mult, shift = 0, 0
    if kind == "avg":
        mult, shift = numerics.quantize_multiplier(1.0 / (kh * kw))
    return dict(pool=kind, pool_kernel=(kh, kw), pool_stride=stride, pool_padding=padding,
                pool_mult=mult, pool_shift=shift), (c, oh, ow)


@st.composite
def clamps(draw):
    lo = draw(st.one_of(st.just(-128), st.just(0), st.integers(-128, 127)))
    hi = draw(st.one_of(st.just(127), st.integers(lo, 127)))
    return lo, hi


@st.composite
def layers(draw, in_shape=None):
    """A random conv or pool QLayer, and its input shape."""
    if in_shape is None:
        in_shape = (draw(st.integers(1, 6)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    c, h, w = in_shape
    lo, hi = draw(clamps())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        o = draw(st.integers(1, 6))
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        kh = draw(st.integers(1, min(7, h + 2 * ph)))
        kw = draw(st.integers(1, min(7, w + 2 * pw)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        ch, cw = out_size(h, kh, stride[0], ph), out_size(w, kw, stride[1], pw)
        pool, out_shape = draw(pools(o, ch, cw))
        low_shift = draw(st.integers(numerics.SHIFT_MIN, numerics.SHIFT_MAX))
        shift = np.where(rng.random(o) < 0.8, rng.integers(31, 46, o), low_shift)
        layer = QLayer(
            name="conv", op="conv", in_shape=in_shape, out_shape=out_shape, out_scale=1.0,
            weight=rng.integers(-127, 128, (o, c, kh, kw)).astype(np.int8),
            bias=rng.integers(-(1 << 16), 1 << 16, o).astype(np.int32),
            mult=rng.integers(1, 1 << 31, o).astype(np.int64), shift=shift.astype(np.int64),
            stride=stride, padding=(ph, pw), lo=lo, hi=hi, **pool)
    else:
        pool, out_shape = draw(pools(c, h, w))
        layer = QLayer(name="pool", op="pool", in_shape=in_shape, out_shape=out_shape,
                       out_scale=1.0, lo=lo, hi=hi, **pool)
    return layer


def _input(seed, n, shape):
    """Uniform int8 with a third of the values at the extremes -128, 0 and 127 (the corners of
    clamping, saturation and padding)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, *shape))
    extremes = rng.choice(np.array([-128, 0, 127]), x.shape)
    return np.where(rng.random(x.shape) < 1 / 3, extremes, x).astype(np.int8)


@SETTINGS
@given(layer=layers(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3))
def test_layer_matches_integer_reference(layer, seed, n):
    x = _input(seed, n, layer.in_shape)
    got = golden.run_layer(layer, x)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, intref.layer(layer, x).numpy())


@st.composite
def chains(draw):
    first = draw(layers())
    chain = [first]
    for _ in range(draw(st.integers(0, 2))):
        chain.append(draw(layers(in_shape=chain[-1].out_shape)))
    if draw(st.booleans()):   # a classifier on the flattened map, as lowered by the compiler
        c, h, w = chain[-1].out_shape
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        o = draw(st.integers(1, 5))
        chain.append(QLayer(
            name="fc", op="conv", in_shape=(c * h * w, 1, 1), out_shape=(o, 1, 1), out_scale=1.0,
            weight=rng.integers(-127, 128, (o, c * h * w, 1, 1)).astype(np.int8),
            bias=rng.integers(-1000, 1000, o).astype(np.int32),
            mult=rng.integers(1 << 30, 1 << 31, o).astype(np.int64),
            shift=rng.integers(33, 42, o).astype(np.int64)))
    return [layer.replace(name=f"{layer.name}{i}") for i, layer in enumerate(chain)]


@SETTINGS
@given(chain=chains(), seed=st.integers(0, 2**32 - 1))
def test_graph_matches_integer_reference_layer_by_layer(chain, seed):
    graph = QGraph(layers=tuple(chain), input_shape=chain[0].in_shape, input_scale=1.0,
                   output_shape=chain[-1].out_shape)
    x = _input(seed, 2, graph.input_shape)
    outs = golden.run_graph(graph, x, return_all=True)
    ref = x
    for layer, got in zip(chain, outs):
        ref = intref.layer(layer, ref).numpy().astype(np.int8)
        np.testing.assert_array_equal(got, ref)


def test_graph_rejects_float_and_misshapen_input(lenet_program):
    x = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(StriateError, match="must be int8, not float32"):
        lenet_program.run_reference(x)
    with pytest.raises(StriateError,
                       match=r"must be N x 1 x 16 x 16, not 1 x 1 x 8 x 8"):
        lenet_program.run_reference(np.zeros((1, 1, 8, 8), np.int8))


def test_max_pool_padding_reads_minus_128():
    """Windows hanging over the edge of an all -128 map must still give -128: padding never wins
    and never raises the result."""
    layer = QLayer(name="pool", op="pool", in_shape=(2, 3, 3), out_shape=(2, 3, 3), out_scale=1.0,
                   pool="max", pool_kernel=(3, 3), pool_stride=(1, 1), pool_padding=(1, 1))
    x = np.full((1, 2, 3, 3), -128, np.int8)
    np.testing.assert_array_equal(golden.run_layer(layer, x), x)
    np.testing.assert_array_equal(intref.layer(layer, x).numpy(), x)


@st.composite
def dags(draw):
    """Random DAGs: layers that read any earlier tensor (fan-out), adds of two tensors of one
    shape with random multipliers and clamps, concatenations of tensors of one size."""
    c, h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes, dag = {INPUT: (c, h, w)}, []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["layer", "add", "concat"]))
        names = list(shapes)
        source = draw(st.sampled_from(names))
        same = [n for n in names if shapes[n] == shapes[source]]
        size = [n for n in names if shapes[n][1:] == shapes[source][1:]]
        lo, hi = draw(st.sampled_from([(-128, 127), (0, 127), (0, 60), (-5, 5)]))
        if kind == "add":
            other = draw(st.sampled_from(same))
            layer = QLayer(name=f"add{i}", op="add", in_shape=shapes[source],
                           out_shape=shapes[source], out_scale=1.0, inputs=(source, other),
                           add_mult=tuple(int(v) for v in rng.integers(0, 1 << 16, 2)),
                           add_shift=draw(st.integers(1, 31)), lo=lo, hi=hi)
        elif kind == "concat":
            parts = tuple(draw(st.lists(st.sampled_from(size), min_size=1, max_size=3)))
            out = (sum(shapes[p][0] for p in parts),) + shapes[source][1:]
            layer = QLayer(name=f"cat{i}", op="concat", in_shape=shapes[parts[0]],
                           out_shape=out, out_scale=1.0, inputs=parts)
        else:
            layer = draw(layers(in_shape=shapes[source])).replace(name=f"l{i}",
                                                                  inputs=(source,))
        dag.append(layer)
        shapes[layer.name] = layer.out_shape
    return dag, (c, h, w)


@SETTINGS
@given(dag=dags(), seed=st.integers(0, 2**32 - 1))
def test_dag_matches_integer_reference_tensor_by_tensor(dag, seed):
    """Every tensor of a random DAG equals the independent reference run on the reference's
    own inputs, and the output is the last layer's."""
    dag, shape = dag
    graph = QGraph(layers=tuple(dag), input_shape=shape, input_scale=1.0,
                   output_shape=dag[-1].out_shape)
    assert graph.check_topology() is None
    x = _input(seed, 2, shape)
    outs = golden.run_graph(graph, x, return_all=True)
    ref = {INPUT: x}
    for layer, got in zip(dag, outs):
        ref[layer.name] = intref.layer(layer, *(ref[t] for t in layer.inputs)).numpy() \
            .astype(np.int8)
        np.testing.assert_array_equal(got, ref[layer.name])
    np.testing.assert_array_equal(golden.run_graph(graph, x), ref[dag[-1].name])


def test_add_rounds_once_and_clamps():
    """The add's one rounding, against hand-computed values: (a * 0.75 + b * 0.5), ties up."""
    layer = QLayer(name="add", op="add", in_shape=(1, 1, 4), out_shape=(1, 1, 4), out_scale=1.0,
                   inputs=("a", "b"), add_mult=(3, 2), add_shift=2, lo=-3, hi=127)
    a = np.array([[[[1, 2, -2, -10]]]], np.int8)
    b = np.array([[[[1, 0, 1, 0]]]], np.int8)
    # 1.25 -> 1; 1.5 -> 2 (tie up); -1.0 -> -1; -7.5 -> -7 then clamped to -3
    assert golden.run_layer(layer, a, b).ravel().tolist() == [1, 2, -1, -3]


@pytest.mark.parametrize("fan_in", [1023, 1100, 4096])
def test_integer_convolution_is_exact_on_either_side_of_the_float32_limit(fan_in):
    """Worst-case sums (every product +-127 * 128, odd sums near the bound) are exact whether the
    GEMM runs in float32 (bound below 2**24: fan-in 1023) or must run in float64 (1100, 4096)."""
    rng = np.random.default_rng(fan_in)
    x = rng.choice(np.array([-128, 127], np.int8), (3, fan_in, 1, 1))
    x[0] = -128
    x[:, 0] = 1                                         # odd sums
    w = rng.choice(np.array([-127, 127], np.int8), (4, fan_in, 1, 1))
    w[0] = -127                                         # channel 0 of image 0: near the bound
    layer = QLayer(name="fc", op="conv", in_shape=(fan_in, 1, 1), out_shape=(4, 1, 1),
                   out_scale=1.0, weight=w, bias=np.zeros(4, np.int32),
                   mult=np.ones(4, np.int64), shift=np.ones(4, np.int64))
    acc = kernels.int_conv2d(x, w, (1, 1), (0, 0))
    want = np.einsum("nc,oc->no", x[:, :, 0, 0].astype(np.int64), w[:, :, 0, 0].astype(np.int64))
    np.testing.assert_array_equal(acc[:, 0, 0, :], want)
    assert want[0, 0] == 127 * 128 * (fan_in - 1) - 127
    np.testing.assert_array_equal(golden.run_layer(layer, x), intref.layer(layer, x).numpy())


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_batch_runs_in_slices_with_the_same_result(lenet_program, monkeypatch, workers):
    """Slices of one, two or three images (the last one short), on one to three threads, give
    what one slice of the whole batch gives, on every layer."""
    x = np.random.default_rng(3).integers(-128, 128, (5, 1, 16, 16)).astype(np.int8)
    assert golden._images_per_slice(lenet_program.graph) >= 5
    whole = lenet_program.run_reference(x, return_all=True)
    monkeypatch.setattr(golden, "WORKERS", workers)
    for images in (1, 2, 3):
        monkeypatch.setattr(golden, "_images_per_slice", lambda graph: images)
        got = lenet_program.run_reference(x, return_all=True)
        assert len(got) == len(whole)
        for a, b in zip(got, whole):
            np.testing.assert_array_equal(a, b)


def test_threads_give_blas_back_its_threads():
    """While slices run on threads BLAS runs on one thread each; afterwards it has what it
    had before, also after an error in a slice."""
    from threadpoolctl import threadpool_info
    from striate.sw import parallel

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    before = blas_threads()
    assert before                                   # numpy's BLAS is seen
    assert parallel.map_threads(lambda _: blas_threads(), [0, 1, 2], 2) == [[1] * len(before)] * 3
    assert blas_threads() == before

    def fail(i):
        if i == 1:
            raise StriateError("slice 1")
        return i
    with pytest.raises(StriateError, match="slice 1"):
        parallel.map_threads(fail, [0, 1, 2], 2)
    assert blas_threads() == before


@pytest.mark.parametrize("mult, shift", [((1 << 31) - 1, 40), ((1 << 31) - 1, 62), (1 << 21, 30),
                                         (1553090841, 55),
                                         (3, 1), (1 << 30, 54)])
def test_requantizing_float_sums_is_exact_on_either_side_of_the_float64_limit(mult, shift):
    """`requantize_sums` on the largest sums, the bias and every rounding tie equals the int64
    `requantize`, whether its float64 path applies (bound and shift small enough) or not."""
    bound = 127 * 128 * 4096
    ties = (1 << (shift - 1)) // mult if shift > 1 else 0
    near = np.arange(bound - 64, bound + 1)
    # 34797189 * 1553090841 is 3 below 1.5 * 2**55, the product's float64 rounds up to it:
    # a float64 path would requantize it to 2, not 1
    acc = np.concatenate([[0, 1, -1, ties, -ties, ties + 1, -ties - 1, 34797189, -34797189],
                          near, -near]) \
        .astype(np.float64)[:, None].repeat(3, axis=1)
    bias = np.array([0, (1 << 20) - 7, -(1 << 20)])
    mults, shifts = np.full(3, mult), np.full(3, shift)
    got = numerics.requantize_sums(acc, bound, bias, mults, shifts, -100, 120)
    want = numerics.requantize(acc.astype(np.int64) + bias, mults, shifts, -100, 120)
    np.testing.assert_array_equal(got, want)
    # worst case against the limit: the float64 path takes only exact cases
    worst = (bound + (1 << 20)) * mult + (1 << (shift - 1))
    assert (worst < numerics.FLOAT64_EXACT) == ((mult, shift) in {(1 << 21, 30), (3, 1)})
