"""Networks larger than the chip on the default configuration (slow tier, `make test-all`):
ResNet-18 on 224 x 224, a VGG-style CIFAR net at full width, MobileNetV1 0.25 on 96 x 96 and a
U-Net on 64 x 64, streamed from external memory at 8 and 2 bytes a cycle, every layer bit-exact
on the fast backend and its counters as the cycle model says. `make bench` prints the same
figures."""

import pytest

from striate.sw.bench import LARGE_MODELS, large_models

# Whole-network utilisation at 8 bytes a cycle and 100 cycles of latency, at least.
UTILIZATION = {"resnet18": 0.80, "vgg-cifar": 0.80, "unet": 0.80, "mobilenet-v1-0.25": 0.45}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LARGE_MODELS))
def test_large_networks_stream_bit_exact_in_the_predicted_cycles(name):
    for key, row in large_models(names=[name], log=lambda line: None).items():
        assert row["streamed"]
        assert row["bit_exact_layers"] == row["layers"], key
        assert row["counters_as_predicted"], key
        if row["bytes_per_cycle"] == 8:
            assert row["utilization"] >= UTILIZATION[name], key


@pytest.mark.slow
def test_vgg16_classifier_streams_in_chunks_of_input_channels():
    """VGG-16's classifier on its 512 x 7 x 7 features (25,088 -> 4,096 -> 4,096 -> 1,000,
    123.6 M weights, in an external memory of 256 MiB): the first layer's weights for 16
    outputs (401 KB) exceed half the weight memory, so it runs in two chunks of input
    channels with partial sums on chip. Every layer bit-exact on the fast backend, the
    counters as the cycle model says."""
    import time

    import numpy as np
    import torch
    import torch.nn as nn

    import striate
    from striate.sw.config import AcceleratorConfig, MemoryTiming
    from striate.sw.golden import timeline

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25088, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                          nn.ReLU(), nn.Linear(4096, 1000)).eval()
    x = torch.randn(4, 512, 7, 7).relu().numpy()
    config, timing = AcceleratorConfig(ext_bytes=256 << 20), MemoryTiming(100, 8)
    program = striate.compile(model, x, config, timing=timing)
    first = [d for owner, (layer, d) in zip(program.stream.owners, program.steps)
             if owner == 0 and layer is not None]
    assert [(d.psum_in, d.psum_out) for d in first[:2]] == [(0, 1), (1, 0)]
    assert sum(d.in_c for d in first[:2]) == 512
    xq = program.quantize_input(x[:1])
    with striate.open("verilator", config, timing=timing) as dev:
        start = time.perf_counter()
        got = dev.run(program, xq, return_all=True)
        seconds = time.perf_counter() - start
        stats = dev.last_run
    for layer, a, b in zip(program.layers, got, program.run_reference(xq, return_all=True)):
        np.testing.assert_array_equal(a, b.reshape(a.shape), err_msg=layer.name)
    assert not timeline.mismatch(program, stats.layer_cycles, stats.cycles)
    print(f"VGG-16 classifier: {len(program.steps)} descriptors, {stats.cycles:,} cycles, "
          f"simulated in {seconds:.0f} s")
