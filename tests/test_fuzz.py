"""The differential fuzzer's fixed-seed tier, its ability to fail, and the reproductions of the
bugs it found (each compared on every layer of the RTL)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import striate
from striate.sw import fuzz
from striate.sw.cli import main

# Networks per configuration in `make test` (about two minutes with warm models); the slow
# tier (`make test-all`) runs four times as many on another seed, and `make fuzz MINUTES=N`
# the same generator on a fresh seed for as long as asked.
TIER = {"default": 150, "small": 250, "serial": 250, "window": 150, "stream": 150,
        "narrow": 100, "icebreaker": 250, "ulx3s": 150, "ulx3s-sdram": 100}


@pytest.fixture(scope="module")
def devices():
    opened = {}
    yield opened
    for device in opened.values():
        device.close()


def _tier(config, devices, seed, nets):
    summary = fuzz.fuzz([config], seed=seed, nets=nets, devices=devices)
    print("\n" + summary.line())
    assert not summary.failures, "\n".join(o.line() for o in summary.failures)
    passed = [o for o in summary.outcomes if o.status == "pass"]
    assert len(passed) >= 0.7 * nets        # most draws compile: the tier tests the RTL
    assert max(o.layers for o in passed) >= 5


@pytest.mark.parametrize("config", list(TIER))
def test_fixed_seed_tier_is_bit_exact_on_every_layer(config, devices):
    _tier(config, devices, 2026, TIER[config])


@pytest.mark.slow
@pytest.mark.parametrize("config", list(TIER))
def test_deeper_fixed_seed_tier(config, devices):
    _tier(config, devices, 2027, 4 * TIER[config])


class _Corrupting:
    """A device whose second layer's readback has one value changed."""

    def __init__(self, device):
        self._device = device

    def __getattr__(self, name):
        return getattr(self._device, name)

    def run(self, program, xq, **options):
        out = self._device.run(program, xq, **options)
        layer = out[min(1, len(out) - 1)]
        layer.reshape(-1)[0] ^= 1
        return out


def test_a_mismatch_fails_with_a_command_that_reruns_it(devices):
    config = "small"
    if config not in devices:
        devices[config] = striate.open("verilator", fuzz.config_named(config))
    case = next(c for c in range(50) if fuzz.run_case(config, 7, c, devices[config]).status
                == "pass")
    outcome = fuzz.run_case(config, 7, case, _Corrupting(devices[config]))
    assert outcome.status == "fail" and "differs from the golden model in 1 of" in outcome.reason
    assert outcome.line().endswith(f"rerun: striate fuzz --config small --seed 7 --case {case}")


def test_cli_reruns_one_case(capsys):
    assert main(["fuzz", "--config", "small", "--seed", "7", "--case", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("network:\n") and "small/7/0" in out
    assert main(["fuzz", "--config", "nosuch", "--nets", "1"]) == 2


def test_cli_reruns_a_streamed_case_on_its_memory_model(capsys):
    """A streamed case reruns on the memory model its run planned it for: this one (tiles of
    three columns) ends 1,014 cycles later than planned on the default model."""
    assert main(["fuzz", "--config", "stream", "--seed", "7", "--case", "38"]) == 0
    assert "PASS    stream/7/38" in capsys.readouterr().out


def test_refusal_reasons_name_the_limit():
    err = striate.MappingError("layer 'x' (module x): stride must be <= 4 "
                               "(AcceleratorConfig.max_stride), not (5, 1)")
    assert fuzz.refusal_reason(err) == "limit max_stride"
    assert fuzz.refusal_reason(striate.MappingError(
        "layer 'x' (module x): descriptor field pad_h must be an integer in [0, 7], not 8")) \
        == "limit descriptor pad_h"
    assert fuzz.refusal_reason(striate.QuantizationError(
        "layer 'x': int32 accumulator may overflow on channel 0")) == "int32 accumulator bound"


def _rtl_equals_golden_on_every_layer(model, x, config=None):
    program = striate.compile(model.eval(), x, config)
    xq = program.quantize_input(x[:2])
    with striate.open("verilator", program.config) as dev:
        got = dev.run(program, xq, return_all=True)
    want = program.run_reference(xq, return_all=True)
    assert len(got) == len(want) == len(program.layers)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g, w.reshape(g.shape), err_msg=f"layer {i}")
    return program


@pytest.mark.parametrize("shape, model", [
    ((1, 46, 46), lambda: nn.Sequential(nn.Conv2d(1, 1, 1))),     # 2,116 output words
    ((4, 40, 40), lambda: nn.Sequential(nn.Conv2d(4, 20, 1))),
], ids=["1x46x46", "20x40x40"])
def test_outputs_beyond_2048_words(shape, model):
    """The writer stored zeros for the channel groups past a map's last one, past the map's
    end: they wrapped around the bank over the map's first words."""
    torch.manual_seed(0)
    _rtl_equals_golden_on_every_layer(model(), torch.randn(8, *shape).numpy())


def test_preserved_outputs_survive_later_layers():
    """A 24 x 31 x 31 map must survive a later 8 x 33 x 32 layer written right after it in the
    activation memory (the writer wrote 16 channels' worth of words for 8)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 24, 1), nn.ReLU(), nn.Conv2d(24, 4, 1),
                          nn.Conv2d(4, 8, (5, 6), padding=3))
    program = _rtl_equals_golden_on_every_layer(model, torch.randn(8, 3, 31, 31).numpy())
    assert program.layers[0].out_shape == (24, 31, 31)
    assert program.layers[-1].out_shape == (8, 33, 32)
    (addr, size), (later, _) = program.plan.act_out[0], program.plan.act_out[2]
    assert later == addr + size     # the 8 x 33 x 32 map (32 channels' words wide) right after it
    assert all(program.plan.preserved)
