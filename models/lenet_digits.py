"""LeNet-style ConvNet for the 16x16 handwritten digits (`striate.datasets.digits`).

Two conv + BatchNorm + ReLU + max-pool stages and a two-layer classifier with dropout:
1x16x16 -> conv5 -> 16x16x16 -> pool -> 16x8x8 -> conv5 -> 32x8x8 -> pool -> 32x4x4 -> 64 -> 10.

Train reproducibly (fixed seeds, one thread, deterministic kernels the same on any x86-64 CPU) and write the committed
weights with ``python -m striate.models.lenet_digits``.
"""

from __future__ import annotations

import torch.nn as nn

from .training import fit, script, shift

SEED = 2015
EPOCHS = 40
BATCH = 64
DATASET = "digits"


class LeNetDigits(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def build() -> nn.Module:
    return LeNetDigits()


def train(epochs: int = EPOCHS, log=print) -> nn.Module:
    """Train from scratch with fixed seeds; returns the model in eval mode."""
    from ..sw.datasets import digits
    x, y = digits("train")
    return fit(build, x, y, epochs, SEED, BATCH, augment=shift, log=log)


def main(argv=None):
    script("lenet-digits", argv)


if __name__ == "__main__":
    main()
