"""Pixel pairs (`AcceleratorConfig.pixel_pairs`): a convolution of at most ``pe_out / 2``
output channels at column stride 1 and with an even number of columns, without pooling or max
pooled two columns at column stride 2, computes two neighbouring conv pixels an item, the
upper half of the PE rows on the second."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

import striate
from striate.hw.platform.boards import BOARDS
from striate.sw.config import AcceleratorConfig
from striate.sw.fuzz import open_model

import rtl_cases


class Thin(nn.Module):
    """Layers of a few channels on a 3 x 12 x 14 input; whether each runs in pairs, by hand
    from the rule, is in `PAIRED`."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 6, 3, padding=1),          # 12 x 14: pairs (a pair's first and last
            #                                         pixels pad on their own at the edges)
            nn.Conv2d(6, 8, 1),                     # 12 x 14, 8 channels: pairs
            nn.Conv2d(8, 5, (5, 3), padding=(0, 2)),  # 8 x 16: pairs
            nn.Conv2d(5, 4, 3, stride=(2, 1), padding=1),  # 4 x 16, rows at stride 2: pairs
            nn.Conv2d(4, 4, 3, padding=1),          # 4 x 16, max pooled 2 x 2 to 2 x 8: pairs,
            #                                         each a pooling window's two columns
            nn.Conv2d(4, 9, 3, padding=1),          # 9 channels: one pixel an item on 16
            #                                         rows, pairs on the ULX3S's 32
            nn.Conv2d(9, 3, 3, stride=(1, 2), padding=1),  # 2 x 4, column stride 2: one
            nn.Conv2d(3, 7, (1, 2)),                # 2 x 3, odd: one
            nn.Conv2d(7, 2, 1),                     # 2 x 3: one
            nn.Conv2d(2, 6, (1, 2), padding=(0, 1)),  # 2 x 4: pairs
        ])
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if i == 4:
                x = self.pool(x)
        return x


PAIRED = {16: [1, 1, 1, 1, 1, 0, 0, 0, 0, 1], 32: [1, 1, 1, 1, 1, 1, 0, 0, 0, 1]}  # by pe_out


@pytest.fixture(scope="module")
def thin():
    torch.manual_seed(3)
    x = np.random.default_rng(3).standard_normal((8, 3, 12, 14)).astype(np.float32)
    return Thin().eval(), x


def _programs(thin, config):
    model, x = thin
    paired = striate.compile(model, x, config=config)
    unpaired = striate.compile(model, x, config=dataclasses.replace(config, pixel_pairs=False))
    return paired, unpaired, paired.quantize_input(x[:3])


@pytest.mark.parametrize("name", ["default", "ulx3s"])
def test_thin_layers_run_in_pairs_bit_exact_in_fewer_cycles(thin, name):
    """Every layer bit-exact and its counters as the cycle model says, with and without the
    pairs (on the ULX3S's design too: 32 rows, registered operands and products, a
    requantizer of four lanes); each paired layer takes fewer cycles than unpaired, the others
    as many.
    The ULX3S's hardware without pairs is not built again: there the paired program's counters
    are compared with the cycle model's: each paired layer is below the unpaired layer's
    least, the model's cycles or, where its four requantizer lanes stall the layer, a cycle
    per lane group of each pixel (8 per pixel on 32 rows); each other layer lies between the
    model's cycles and its bound (a layer after a paired one may take longer than unpaired:
    its set-up overlaps less of the shorter layer before it)."""
    from striate.sw.golden import cycles
    config = AcceleratorConfig() if name == "default" else BOARDS[name].config
    paired, unpaired, xq = _programs(thin, config)
    assert [d.pair for d in paired.descriptors] == PAIRED[config.pe_out]
    assert not any(d.pair for d in unpaired.descriptors)
    measured = []
    for program in (paired, unpaired) if name == "default" else (paired,):
        with (striate.open("verilator", program.config) if name == "default"
              else open_model(name)) as dev:
            measured.append(rtl_cases.check_on_rtl(dev, program, xq).layer_cycles)
    low = high = measured[1] if name == "default" else None
    if name != "default":
        model = list(zip(cycles.program_cycles(unpaired), cycles.program_cycles(paired),
                         cycles.program_cycles(paired, True), unpaired.layers,
                         PAIRED[config.pe_out]))
        low = [max(u, cycles.layer_items(layer, config, False, False)
                   // cycles.chunks_per_pixel(layer, config) * cycles.requant_steps(config))
               if pair else p for u, p, _, layer, pair in model]
        high = [bound for _, _, bound, _, _ in model]
    assert len(measured[0]) == len(low) == len(high) == len(PAIRED[config.pe_out])
    # the 9-channel layer at column stride 2 reads its last channel group with merged lanes
    # (the hardware for pairs reads the next word): fewer cycles too
    merged = [d.merge for d in paired.descriptors]
    assert merged == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    for pair, merge, a, b, bound in zip(PAIRED[config.pe_out], merged, measured[0], low, high):
        assert (a < b) if pair or merge and name == "default" else (b <= a <= max(b, bound)), \
            (pair, a, b, bound)


def test_pairs_need_half_the_rows_in_whole_words():
    """Arrays of fewer than two words of rows have no pairs; a layer then runs one pixel an
    item, its weights and parameters not copied."""
    narrow = AcceleratorConfig(pe_out=4, pe_in=4, ext_bytes=0)
    assert not narrow.pairs and AcceleratorConfig().pairs
    assert not AcceleratorConfig(pixel_pairs=False).pairs


def test_illegal_pair_descriptors_stop_with_an_error(thin):
    """A descriptor with ``pair`` outside the rule stops the run before the layer starts:
    more than pe_out / 2 channels, average pooling, a window more than one pair wide (error 4,
    shape), or not a convolution (error 1); so does one with ``merge`` in pairs or not a
    convolution (error 1); the program as compiled runs afterwards."""
    from striate.sim.cocotb_run import run_job
    from striate.sw.mapping import memmap
    from striate.sw.mapping.descriptor import OP_DW
    from striate.sw.runtime import image
    program, _, xq = _programs(thin, AcceleratorConfig())
    descs = list(program.descriptors)
    d = descs[1]
    assert d.pair

    def changed(**fields):
        return dataclasses.replace(d, **fields)
    pooled = descs[4]
    assert pooled.pair and pooled.pool == 1 and descs[6].merge
    cases = [(1, changed(out_c=9), memmap.E_SHAPE), (1, changed(op=OP_DW), memmap.E_OP),
             (1, changed(merge=1), memmap.E_OP),
             (6, dataclasses.replace(descs[6], op=OP_DW), memmap.E_OP),
             (4, dataclasses.replace(pooled, pool=2), memmap.E_SHAPE),
             (4, dataclasses.replace(pooled, pool_k_w=2), memmap.E_SHAPE),
             (5, dataclasses.replace(descs[5], pair=1), memmap.E_SHAPE)]
    runs = []
    for index, bad, _ in cases:
        words = [w for i, x in enumerate(descs) for w in (bad if i == index else x).to_words()]
        runs.append({"inputs": [(memmap.address(memmap.PROGRAM), np.array(words, np.uint32)),
                                image.input_image(program, xq[0])],
                     "layers": len(descs), "outputs": []})
    good = [w for x in descs for w in x.to_words()]
    last = len(descs) - 1
    runs.append({"inputs": [(memmap.address(memmap.PROGRAM), np.array(good, np.uint32)),
                            image.input_image(program, xq[0])],
                 "layers": len(descs), "outputs": [image.output_location(program, last)]})
    results = run_job(program.config, image.program_image(program), runs, stall_prob=0.2,
                      seed=5)
    for (index, _, code), res in zip(cases, results):
        assert (res["status"], res["error"], res["layer"]) == (memmap.FAILED, code, index)
    final = results[-1]
    assert final["status"] == memmap.DONE
    np.testing.assert_array_equal(
        image.decode_output(program, last, final["outputs"][0]),
        program.run_reference(xq[:1], return_all=True)[last][0])


@pytest.mark.parametrize("streaming", ["never", "always"])
def test_a_pooled_pair_of_one_window_survives_save_and_load(tmp_path, streaming):
    """A max pool over a map two columns wide has one window, whose column stride is never
    taken: the file stores the layer with stride 1, and the loaded layer pairs as compiled."""
    from striate.sw.runtime.fileformat import load_program
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 1), nn.MaxPool2d((1, 2), (1, 3)))
    x = np.random.default_rng(0).standard_normal((4, 4, 6, 2)).astype(np.float32)
    program = striate.compile(model, x, streaming=streaming)
    assert [d.pair for _, d in program.steps if getattr(d, "pool", 0) == 1] == [1]
    program.save(tmp_path / "p.stp")
    loaded = load_program(tmp_path / "p.stp")
    assert [d for _, d in loaded.steps] == [d for _, d in program.steps]
    xq = program.quantize_input(x)
    np.testing.assert_array_equal(loaded.run_reference(xq), program.run_reference(xq))


@pytest.mark.parametrize("c_in,streaming", [(4, "never"), (3, "always")])
def test_pairs_at_the_widest_map_with_the_memory_all_but_full(c_in, streaming):
    """Paired layers, unpooled and max pooled, on maps of ``max_width`` columns (the last
    pair's second pixel pads on its own at the right edge): on chip with the input and the
    first layer's output filling 63 of the 64 KiB, and streamed from a host-unfolded input."""
    config = AcceleratorConfig()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 6, (3, 5), padding=(1, 2)), nn.ReLU(),
                          nn.MaxPool2d(2)).eval()
    x = np.random.default_rng(1).standard_normal((4, c_in, 21, config.max_width))
    program = striate.compile(model, x.astype(np.float32), config=config, streaming=streaming)
    from striate.sw.mapping.descriptor import OP_CONV
    convs = [d for _, d in program.steps if hasattr(d, "pair") and d.op == OP_CONV]
    assert len(convs) >= 2 and all(d.pair for d in convs)
    if streaming == "never":
        top = max(a + s for a, s in program.plan.tensors.values())
        assert config.act_bytes - 1024 <= top <= config.act_bytes
    with striate.open("verilator", config) as dev:
        rtl_cases.check_on_rtl(dev, program, program.quantize_input(x[:2].astype(np.float32)))


@pytest.mark.parametrize("cin,cout,pool", [(160, 8, False), (160, 6, True), (200, 4, False)])
def test_pairs_in_chunks_of_input_channels(cin, cout, pool):
    """A streamed paired layer too wide for half the weight memory runs in chunks of input
    channels, each pair's sums kept in one partial-sum entry between chunks (the fuzzer's
    `stream` configuration: 32 KiB of weights, 4 KiB of activations); its tiles of an even
    width pair."""
    from striate.sw import fuzz
    config, timing = fuzz.config_named("stream"), fuzz.STREAMED["stream"]
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                          *([nn.MaxPool2d(2)] if pool else [])).eval()
    x = np.random.default_rng(2).standard_normal((3, cin, 6, 10)).astype(np.float32)
    program = striate.compile(model, x, config=config, timing=timing, streaming="always")
    convs = [d for _, d in program.steps if hasattr(d, "pair")]   # not the transfers
    assert all(d.psum_in or d.psum_out for d in convs)
    assert sum(d.pair for d in convs) >= len(convs) // 2   # tiles of an odd width don't pair
    with striate.open("verilator", config, timing=timing) as dev:
        rtl_cases.check_on_rtl(dev, program, program.quantize_input(x[:1]))
