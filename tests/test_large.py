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
