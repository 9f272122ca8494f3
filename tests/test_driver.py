"""The host driver on the three simulated backends."""

import re

import numpy as np
import pytest

import striate
from striate.sw.mapping import memmap
from striate.sw.golden import timeline
from striate.sw.runtime.driver import Device, DeviceError, DeviceTimeout
from striate.sw.runtime.program import Program

import rtl_cases
from test_rtl import SMALL


@pytest.fixture(scope="module", autouse=True)
def _profile_guided():
    """This module's default-configuration simulators are the profile-guided build users get."""
    patch = pytest.MonkeyPatch()
    patch.setenv("STRIATE_SIM_PGO", "1")
    patch.setenv("STRIATE_SIM_OPT", "-O3")
    yield
    patch.undo()


@pytest.fixture
def plain_builds(monkeypatch):
    """Other configurations' simulators built plain, as in the rest of the suite (a profile
    changes only their speed, and costs a second build)."""
    monkeypatch.setenv("STRIATE_SIM_PGO", "0")
    monkeypatch.setenv("STRIATE_SIM_OPT", "-O1")


@pytest.fixture(scope="module")
def verilator_default():
    with striate.open("verilator") as dev:
        yield dev


def test_the_default_build_is_trained_and_profile_guided(verilator_default):
    from striate.sim import fastsim
    lib = fastsim.build_library(striate.AcceleratorConfig())
    assert lib.parent.name.startswith("fast-pgo-")
    profiles = {p.name: p.stat().st_size for p in (lib.parent / "obj").glob("*.gcda")}
    assert profiles["harness.gcda"] > 0
    assert sum(size for name, size in profiles.items() if name.startswith("Vtop___024root")) > 0


def test_an_unknown_optimisation_level_is_refused(monkeypatch):
    from striate.sim import fastsim
    monkeypatch.setenv("STRIATE_SIM_OPT", "-O9")
    with pytest.raises(striate.StriateError, match="STRIATE_SIM_OPT must be one of -O3, -O2, "
                                                   "-O1, -O0, -Os, not '-O9'"):
        fastsim.build_library(striate.AcceleratorConfig(pe_out=2))


def test_verilator_backend_runs_the_whole_test_split_bit_exact(verilator_default, lenet_program,
                                                               digits_test):
    xq = lenet_program.quantize_input(digits_test[0])
    yq = verilator_default.run(lenet_program, xq)
    np.testing.assert_array_equal(yq, lenet_program.run_reference(xq))
    run = verilator_default.last_run
    assert run.layer_cycles == (1996, 12819, 531, 35) and run.cycles == 15381
    assert run.utilization["network"] == pytest.approx(14922 / 15381)
    assert run.utilization["features.4"] > 0.98


def test_set_up_after_each_layer_costs_what_it_did_before_the_overlap(lenet, calibration,
                                                                       digits_test,
                                                                       plain_builds):
    """Without `overlap_setup` each layer's descriptor fetch and sizes follow the layer before:
    the counters the accelerator read before the overlap existed, bit-exact outputs, and the
    overlapped default saves each later layer's set-up (the test above)."""
    config = striate.AcceleratorConfig(overlap_setup=False)
    program = striate.compile(lenet, calibration, config)
    xq = program.quantize_input(digits_test[0][:4])
    with striate.open("verilator", config, instances=1) as dev:
        np.testing.assert_array_equal(dev.run(program, xq), program.run_reference(xq))
        assert dev.last_run.layer_cycles == (1997, 13007, 718, 212)
        assert dev.last_run.cycles == 15934


def test_instances_share_a_batch_and_leave_the_state_of_one(lenet_program, digits_test):
    """Three simulator instances on seven images: every layer of every image as the golden
    model has it, progress counts every image once, and the device itself ran the last images,
    so its counters and output memory are a serial run's."""
    xq = lenet_program.quantize_input(digits_test[0][:7])
    reference = lenet_program.run_reference(xq, return_all=True)
    seen = []
    with striate.open("verilator", instances=3) as dev:
        got = dev.run(lenet_program, xq, return_all=True, progress=seen.append)
        assert dev.instances_used == 3
        assert dev.simulated_cycles - dev.transport.cycles >= 5 * 15381     # the helpers ran 5
        for a, b in zip(got, reference):
            np.testing.assert_array_equal(a, b.reshape(a.shape))
        assert sorted(seen) == list(range(1, 8))
        assert dev.last_run.cycles == 15381 == dev._reg(memmap.CYCLES)
        np.testing.assert_array_equal(dev._output(lenet_program, 3).reshape(-1),
                                      reference[-1][-1].reshape(-1))
        with pytest.raises(DeviceTimeout, match="did not finish within 5,000 cycles"):
            dev.run(lenet_program, xq, timeout_cycles=5000)
        for device in dev._helpers + [dev]:      # every instance stopped its run
            assert device._reg(memmap.STATUS) & memmap.BUSY == 0
        np.testing.assert_array_equal(dev.run(lenet_program, xq), reference[-1])
    with pytest.raises(striate.StriateError, match="instances must be a positive integer"):
        striate.open("verilator", instances=0)


def test_an_error_on_one_instance_is_raised_and_stops_the_others(lenet_program, digits_test):
    """A bad descriptor in the first helper's program memory only: its error, naming that
    instance, is what `run` raises; after a reload every instance is exact again."""
    xq = lenet_program.quantize_input(digits_test[0][:9])
    with striate.open("verilator", instances=3) as dev:
        dev.run(lenet_program, xq[:3])
        helper = dev._helpers[0]
        bad = type(lenet_program.descriptors[1])(**{**lenet_program.descriptors[1].__dict__,
                                                    "pool": 3})
        words = bad.to_words()
        helper.transport.write(memmap.address(memmap.PROGRAM, len(words)), words)
        seen = []
        with pytest.raises(DeviceError, match=re.escape(
                "verilator simulation #2 stopped with error 1 (unknown op or pool code) at "
                "layer 1 ('features.4')")):
            dev.run(lenet_program, xq, progress=seen.append)
        assert len(seen) < 6        # the others stopped before finishing their 3 images each
        helper.load(lenet_program)
        np.testing.assert_array_equal(dev.run(lenet_program, xq),
                                      lenet_program.run_reference(xq))


def test_return_all_gives_every_layer(verilator_default, lenet_program, digits_test):
    xq = lenet_program.quantize_input(digits_test[0][:5])
    got = verilator_default.run(lenet_program, xq, return_all=True)
    for a, b in zip(got, lenet_program.run_reference(xq, return_all=True)):
        np.testing.assert_array_equal(a, b.reshape(a.shape))


@pytest.mark.parametrize("config_name", ["default", "small"])
def test_every_memory_reads_back_what_the_host_wrote(config_name, verilator_default,
                                                     plain_builds):
    """Each memory window, whatever its row width, returns what was written to it."""
    dev = verilator_default if config_name == "default" else striate.open("verilator", SMALL)
    rng = np.random.default_rng(4)
    for region, shape in memmap.memories(dev.config).items():
        count = min(96, shape.depth * shape.row_words)
        words = rng.integers(0, 2**32, count, dtype=np.uint32)
        if shape.width < 32:                     # narrow rows keep their low bits only
            words &= (1 << shape.width) - 1
        dev.transport.write(memmap.address(region, 0), words)
        np.testing.assert_array_equal(dev.transport.read(memmap.address(region, 0), count),
                                      words, err_msg=f"region {region}")


def test_three_backends_agree_with_each_other_and_the_golden_model(plain_builds):
    graph, rng = rtl_cases.random_chain(21, layers=3, max_channels=6, max_width=7)
    program = Program(graph, SMALL)
    xq = rtl_cases.random_inputs(rng, 2, graph.input_shape)
    reference = program.run_reference(xq, return_all=True)
    stats = {}
    for backend in ("verilator", "pysim", "cocotb"):
        with striate.open(backend, SMALL) as dev:
            outs = dev.run(program, xq, return_all=True)
            stats[backend] = dev.last_run
        for got, want in zip(outs, reference):
            np.testing.assert_array_equal(got, want)
    assert stats["verilator"] == stats["pysim"] == stats["cocotb"]


def test_program_for_another_config_is_refused(verilator_default, lenet, calibration):
    other = striate.compile(lenet, calibration[:32], SMALL)
    with pytest.raises(striate.StriateError, match=re.escape(
            "program was compiled for AcceleratorConfig(pe_out=4, pe_in=2")):
        verilator_default.load(other)


def test_device_of_another_config_is_refused(verilator_default):
    with pytest.raises(striate.StriateError, match="was generated for configuration id 0x"):
        Device(verilator_default.transport, SMALL)


def test_device_error_is_decoded(verilator_default, lenet_program, digits_test):
    dev = verilator_default
    dev.load(lenet_program)
    bad = type(lenet_program.descriptors[1])(**{**lenet_program.descriptors[1].__dict__,
                                                "pool": 3})
    words = bad.to_words()
    dev.transport.write(memmap.address(memmap.PROGRAM, len(words)), words)
    xq = lenet_program.quantize_input(digits_test[0][:1])
    with pytest.raises(DeviceError, match=re.escape(
            "stopped with error 1 (unknown op or pool code) at layer 1 ('features.4')")):
        dev.run(lenet_program, xq)
    dev.load(lenet_program)     # reloading repairs the program memory
    np.testing.assert_array_equal(dev.run(lenet_program, xq), lenet_program.run_reference(xq))


def test_timeout_names_the_layer(verilator_default, lenet_program, digits_test):
    dev = verilator_default
    xq = lenet_program.quantize_input(digits_test[0][:1])
    with pytest.raises(DeviceTimeout, match=re.escape(
            "did not finish within 5,000 cycles; it was on layer 1 ('features.4')")):
        dev.run(lenet_program, xq, timeout_cycles=5000)
    # The driver stopped the run with CTRL.ABORT: the device is idle and the next run is exact.
    assert dev._reg(memmap.STATUS) == 0
    np.testing.assert_array_equal(dev.run(lenet_program, xq), lenet_program.run_reference(xq))
    assert dev.last_run.cycles == 15381


def test_abort_stops_a_run_the_cycle_after_the_write(verilator_default, lenet_program,
                                                     digits_test):
    dev = verilator_default
    xq = lenet_program.quantize_input(digits_test[0][:2])
    dev.load(lenet_program)
    dev._start(lenet_program, xq[0], len(lenet_program.layers))
    dev.transport.wait(3000)
    assert dev._reg(memmap.STATUS) == memmap.BUSY
    dev.transport.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.START | memmap.ABORT])
    dev.transport.wait(1)                       # the abort is registered
    assert dev._reg(memmap.STATUS) == 0 and dev._reg(memmap.CYCLES) == 0
    dev.transport.wait(20_000)                  # nothing runs on after the abort
    assert dev._reg(memmap.STATUS) == 0
    np.testing.assert_array_equal(dev.run(lenet_program, xq), lenet_program.run_reference(xq))


def test_return_all_reads_back_overwritten_layers(verilator_default, plain_builds):
    """Layers whose outputs a later layer overwrites are read after a program prefix run."""
    config = striate.AcceleratorConfig(act_bytes=1024)
    graph, rng = rtl_cases.random_chain(88, layers=5)   # its plan overwrites the first output
    program = Program(graph, config)
    assert program.plan.preserved[-1] and not all(program.plan.preserved)
    xq = rtl_cases.random_inputs(rng, 2, graph.input_shape)
    with striate.open("verilator", config) as dev:
        got = dev.run(program, xq, return_all=True)
        problem = timeline.mismatch(program, dev.last_run.layer_cycles, dev.last_run.cycles)
        assert not problem, problem
    for a, b in zip(got, program.run_reference(xq, return_all=True)):
        np.testing.assert_array_equal(a, b.reshape(a.shape))


def test_bad_input_and_backend_names(verilator_default, lenet_program):
    with pytest.raises(striate.StriateError, match=re.escape(
            "input must be int8 N x 1 x 16 x 16, not float32 2 x 1 x 16 x 16")):
        verilator_default.run(lenet_program, np.zeros((2, 1, 16, 16), np.float32))
    with pytest.raises(striate.StriateError, match="backend must be one of verilator, pysim, "
                                                   "cocotb or serial:PORT, not 'fpga'"):
        striate.open("fpga")
    with pytest.raises(striate.StriateError, match="cannot open serial port '/dev/nonexistent"):
        striate.open("serial:/dev/nonexistent")
