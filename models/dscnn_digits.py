"""A depthwise-separable residual ConvNet (MobileNet / DS-CNN style) for the 16x16 handwritten
digits (`striate.datasets.digits`).

A 3x3 stem of 16 channels, then depthwise-separable blocks (3x3 depthwise, BatchNorm, ReLU,
1x1 pointwise, BatchNorm) with residual adds and ReLU after them, two strided ones that halve
the map and double the channels, and a linear classifier on the flattened 64 x 4 x 4 map:
1x16x16 -> 16x16x16 -> (block) -> 32x8x8 -> (block) -> 64x4x4 -> 10. On an array with a
depthwise window (`AcceleratorConfig.depthwise_kernel`) its depthwise layers run on it.

Train reproducibly (fixed seeds, one thread, deterministic kernels the same on any x86-64 CPU) and write the committed
weights with ``python -m striate.models.dscnn_digits``.
"""

from __future__ import annotations

import torch.nn as nn

from .training import fit, script, shift

SEED = 2017
EPOCHS = 40
DATASET = "digits"


def _separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
        nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class DsConvDigits(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = _separable(16, 16, 1)
        self.down1 = nn.Sequential(_separable(16, 32, 2), nn.ReLU())
        self.block2 = _separable(32, 32, 1)
        self.down2 = nn.Sequential(_separable(32, 64, 2), nn.ReLU())
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 4 * 4, 10))

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(self.block1(x) + x)
        x = self.down1(x)
        x = self.relu(self.block2(x) + x)
        return self.head(self.down2(x))


def build() -> nn.Module:
    return DsConvDigits()


def train(epochs: int = EPOCHS, log=print) -> nn.Module:
    from ..sw.datasets import digits
    x, y = digits("train")
    return fit(build, x, y, epochs, SEED, augment=shift, log=log)


def main(argv=None):
    script("dscnn-digits", argv)


if __name__ == "__main__":
    main()
