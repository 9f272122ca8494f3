"""A time-delay net (1-D ConvNet) that reads each 16x16 handwritten digit as a sequence of 16
rows of 16 features (`striate.datasets.digit_rows`), as speech nets read frames.

Three Conv1d layers of 32 channels with contexts widening by dilation (1, 2, 3), BatchNorm, ReLU
and, in the last, tanh (a function by table in the hardware); a global average pool over time
and a linear classifier: 16x16 -> 32x16 -> 32x16 -> 32x16 -> 32 -> 10.

Train reproducibly (fixed seeds, one thread, deterministic kernels the same on any x86-64 CPU) and write the committed
weights with ``python -m striate.models.tdnn_digits``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .training import fit, script, shift

SEED = 1989
EPOCHS = 40
DATASET = "digit-rows"


def build() -> nn.Module:
    def context(c_in, dilation, act):
        return [nn.Conv1d(c_in, 32, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm1d(32), act]
    return nn.Sequential(*context(16, 1, nn.ReLU()), *context(32, 2, nn.ReLU()),
                         *context(32, 3, nn.Tanh()),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10))


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each sequence by up to 2 steps in time and each frame by up to 2 features."""
    return shift(x[:, None], gen)[:, 0]


def train(epochs: int = EPOCHS, log=print) -> nn.Module:
    from ..sw.datasets import digit_rows
    x, y = digit_rows("train")
    return fit(build, x, y, epochs, SEED, augment=_shift, log=log)


def main(argv=None):
    script("tdnn-digits", argv)


if __name__ == "__main__":
    main()
