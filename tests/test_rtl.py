"""The accelerator RTL under cocotb: every layer's output equals the golden model."""

import numpy as np
import pytest

import striate
from striate.sim.cocotb_run import run_job, run_program
from striate.sw.runtime import image
from striate.sw.mapping import memmap
from striate.sw.mapping.descriptor import OP_ADD, OP_DW
from striate.sw.ir.graph import QGraph, QLayer
from striate.sw.ir.kernels import out_size
from striate.sw.golden import timeline
from striate.sw.golden.cycles import layer_items, program_cycles
from striate.sw.runtime.driver import RunStats
from striate.sw.runtime.program import Program

import rtl_cases

DEFAULT = striate.AcceleratorConfig()
SMALL = striate.AcceleratorConfig(pe_out=4, pe_in=2, requant_lanes=1, max_width=32,
                                  act_bytes=16384, weight_bytes=65536, param_entries=256,
                                  program_depth=8)
CONFIGS = {"default": DEFAULT, "small": SMALL}


def check_bit_exact(program, images, results):
    acts = program.run_reference(images, return_all=True)
    for n, res in enumerate(results):
        assert res["status"] == memmap.DONE, f"image {n}: status {res['status']}, error {res['error']}"
        for i, got in enumerate(res["outputs"]):
            if got is not None:
                np.testing.assert_array_equal(got, acts[i][n].reshape(got.shape),
                                              err_msg=f"image {n}, layer {i}")
    return acts


def utilization_table(program, res):
    stats = RunStats.of(program, res["cycles"], res["layer_cycles"], res["pe_busy"])
    util = stats.utilization
    rows = [(name, cyc, ideal, util[name]) for name, cyc, ideal in
            zip(stats.layer_names, stats.layer_cycles, stats.ideal_cycles)]
    return rows, util["network"]


@pytest.mark.parametrize("name, count", [("default", 25), ("small", 12)])
def test_lenet_on_test_images_every_layer_bit_exact(name, count, lenet, calibration, digits_test):
    program = striate.compile(lenet, calibration, CONFIGS[name])
    assert all(program.plan.preserved)
    xq = program.quantize_input(digits_test[0][:count])
    results = run_program(program, xq)
    check_bit_exact(program, xq, results)
    cycles = {int(r["cycles"]) for r in results}
    assert len(cycles) == 1, "cycle counts must not depend on the data"
    assert results[0]["layer_cycles"].tolist() == program_cycles(program)
    assert int(results[0]["cycles"]) == sum(program_cycles(program))
    assert int(results[0]["pe_busy"]) == sum(layer_items(l, program.config)
                                             for l in program.layers)
    rows, whole = utilization_table(program, results[0])
    print(f"\nLeNet on {name} config ({program.config.macs_per_cycle} MACs/cycle):")
    for layer, cyc, ideal, util in rows:
        print(f"  {layer:<14} {cyc:>7} cycles  ideal {ideal:>8.0f}  utilization {util:6.1%}")
    print(f"  whole network {int(results[0]['cycles'])} cycles, utilization {whole:.1%}")
    if name == "default":
        for (layer, *_ , util), l in zip(rows, program.layers):
            if l.kernel != l.in_shape[1:]:          # convolution layers (not lowered linears)
                assert util >= 0.80, layer
        assert whole >= 0.70


@pytest.mark.parametrize("config_name", ["default", "small"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_layer_chains_bit_exact(config_name, seed):
    config = CONFIGS[config_name]
    graph, rng = rtl_cases.random_chain(seed + (100 if config_name == "small" else 0))
    program = Program(graph, config)
    xq = rtl_cases.random_inputs(rng, 2, graph.input_shape)
    results = run_program(program, xq, stall_prob=0.3, seed=seed)
    check_bit_exact(program, xq, results)
    assert all(out is not None for out in results[0]["outputs"])
    problem = timeline.mismatch(program, list(results[0]["layer_cycles"]),
                                int(results[0]["cycles"]))
    assert not problem, problem


def _with(desc, **changes):
    return type(desc)(**{**desc.__dict__, **changes})


def test_illegal_descriptors_stop_with_error_and_write_nothing(lenet_program, digits_test):
    program = lenet_program
    cfg = program.config
    descs = list(program.descriptors)
    act_bytes = cfg.act_bytes
    sentinel = np.arange(64, dtype=np.uint32) * 0x01010101
    # the sentinel sits at the end of the activation memory, where no LeNet tensor is placed
    sentinel_at = memmap.address(memmap.ACT, act_bytes // 4 - len(sentinel))
    assert max(a + s for a, s in program.plan.tensors.values()) <= act_bytes - 4 * len(sentinel)
    sentinel_block = (sentinel_at, sentinel)
    x = program.quantize_input(digits_test[0][:1])[0]
    d0, d2 = descs[0], descs[2]
    cases = [  # (layer index, replacement descriptor, layers to run, expected error)
        (0, _with(d0, op=0), 4, memmap.E_OP),
        (0, _with(d0, pool=3), 4, memmap.E_OP),
        (0, _with(d0, in_c=0), 4, memmap.E_ZERO),
        (0, _with(d0, out_h=0), 4, memmap.E_ZERO),
        (0, _with(d0, in_w=cfg.max_width + 1), 4, memmap.E_LIMIT),
        (0, _with(d0, in_h=cfg.max_height + 1), 4, memmap.E_LIMIT),
        (0, _with(d0, stride_h=cfg.max_stride + 1), 4, memmap.E_LIMIT),
        (0, _with(d0, conv_h=d0.conv_h + 2), 4, memmap.E_SHAPE),
        (0, _with(d0, out_w=d0.out_w + 3), 4, memmap.E_SHAPE),
        (0, _with(d0, in_addr=d0.in_addr + 1), 4, memmap.E_ALIGN),
        (0, _with(d0, out_addr=act_bytes - 4 * cfg.pe_in), 4, memmap.E_ACT),
        (0, _with(d0, in_addr=act_bytes - 4 * cfg.pe_in), 4, memmap.E_ACT),
        (0, _with(d0, weight_addr=cfg.weight_bytes - cfg.pe_out * cfg.pe_in), 4,
         memmap.E_WEIGHT),
        (0, _with(d0, param_addr=cfg.param_entries), 4, memmap.E_PARAM),
        (2, _with(d2, op=0), 4, memmap.E_OP),
        (2, _with(d2, op=OP_DW), 4, memmap.E_LIMIT),       # depthwise: a 4x4 kernel
        (2, _with(d2, op=OP_ADD, table=1), 4, memmap.E_OP),         # an add has no table
        (0, _with(d0, table=cfg.activation_tables + 1), 4, memmap.E_LIMIT),
        (0, d0, 0, memmap.E_COUNT),
        # partial sums: only a convolution's, only where the memory is, and within it
        (0, _with(d0, op=OP_DW, psum_in=1), 4, memmap.E_OP),
        (2, _with(d2, op=OP_ADD, psum_out=1), 4, memmap.E_OP),
        (0, _with(d0, psum_out=1, out_c=cfg.pe_out * (
            cfg.psum_entries // (d0.out_h * d0.out_w * d0.pool_k_h * d0.pool_k_w) + 1)), 4,
         memmap.E_PSUM if cfg.psum_entries else memmap.E_OP),
        # with external memory the program memory is a ring (a longer program refills it):
        # past LeNet's four descriptors it reads zero words, a transfer into no memory
        (4, d0, cfg.program_depth + 1, memmap.E_OP) if cfg.ext_bytes else
        (0, d0, cfg.program_depth + 1, memmap.E_COUNT),
    ]
    runs = []
    for index, bad, layers, _ in cases:
        words = [w for i, d in enumerate(descs) for w in (bad if i == index else d).to_words()]
        runs.append({"inputs": [(memmap.address(memmap.PROGRAM), np.array(words, np.uint32)),
                                sentinel_block, image.input_image(program, x)],
                     "layers": layers,
                     "outputs": [(sentinel_at, len(sentinel))]})
    # A good run afterwards: an error leaves the accelerator ready for the next program.
    good = [w for d in descs for w in d.to_words()]
    runs.append({"inputs": [(memmap.address(memmap.PROGRAM), np.array(good, np.uint32)),
                            image.input_image(program, x)],
                 "layers": 4, "outputs": [image.output_location(program, 3)]})
    results = run_job(cfg, image.program_image(program), runs, stall_prob=0.2, seed=7)
    for (index, _, layers, code), res in zip(cases, results):
        assert (res["status"], res["error"]) == (memmap.FAILED, code), (index, code)
        assert res["layer"] == index
        if index == 0:
            np.testing.assert_array_equal(res["outputs"][0], sentinel)
    final = results[-1]
    assert final["status"] == memmap.DONE and final["error"] == 0
    np.testing.assert_array_equal(image.decode_output(program, 3, final["outputs"][0]),
                                  program.run_reference(x[None], return_all=True)[3][0]
                                  .reshape(10, 1, 1))


@pytest.mark.slow          # about 3 minutes under Icarus
def test_icarus_runs_a_lenet_image(lenet_program, digits_test):
    """The same Verilog under Icarus: a LeNet image on the default configuration."""
    xq = lenet_program.quantize_input(digits_test[0][:1])
    check_bit_exact(lenet_program, xq, run_program(lenet_program, xq, simulator="icarus"))


def test_icarus_runs_a_random_chain_with_stalls():
    """The same Verilog under Icarus: a random chain, the host stalling the output."""
    graph, rng = rtl_cases.random_chain(11, layers=2)
    program = Program(graph, SMALL)
    xr = rtl_cases.random_inputs(rng, 1, graph.input_shape)
    check_bit_exact(program, xr, run_program(program, xr, simulator="icarus", stall_prob=0.3))


@pytest.mark.parametrize("config_name", ["default", "small"])
def test_map_as_wide_as_the_configuration_allows(config_name):
    """A map of ``max_width`` columns with a non-square kernel, stride 2 and padding."""
    config = CONFIGS[config_name]
    rng = np.random.default_rng(5)
    c, h, w = 3, 4, config.max_width
    kh, kw, sh, sw, ph, pw = 3, 7, 1, 2, 1, 3
    ch, cw = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    layer = QLayer(
        name="wide", op="conv", in_shape=(c, h, w), out_shape=(5, ch // 2, cw // 2), out_scale=1.0,
        weight=rng.integers(-127, 128, (5, c, kh, kw)).astype(np.int8),
        bias=rng.integers(-1000, 1000, 5).astype(np.int32),
        mult=rng.integers(1 << 30, 1 << 31, 5).astype(np.int64),
        shift=np.full(5, 40, np.int64), stride=(sh, sw), padding=(ph, pw), lo=0,
        pool="max", pool_kernel=(2, 2), pool_stride=(2, 2))
    graph = QGraph(layers=(layer,), input_shape=(c, h, w), input_scale=1.0,
                   output_shape=layer.out_shape)
    program = Program(graph, config)
    xq = rtl_cases.random_inputs(rng, 1, graph.input_shape)
    check_bit_exact(program, xq, run_program(program, xq))
