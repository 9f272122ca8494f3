"""LeNet-style ConvNet for the 16x16 handwritten digits (`striate.datasets.digits`).

Two conv + BatchNorm + ReLU + max-pool stages and a two-layer classifier with dropout:
1x16x16 -> conv5 -> 16x16x16 -> pool -> 16x8x8 -> conv5 -> 32x8x8 -> pool -> 32x4x4 -> 64 -> 10.

Train reproducibly (fixed seeds, one thread, deterministic kernels) and write the committed
weights with ``python -m striate.models.lenet_digits``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn as nn

SEED = 2015
EPOCHS = 40
BATCH = 64


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


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to 2 pixels (zero fill), a cheap invariance the test set needs."""
    shifts = torch.randint(-2, 3, (x.shape[0], 2), generator=gen)
    out = torch.zeros_like(x)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        src = x[i, :, max(0, -dy):x.shape[2] - max(0, dy), max(0, -dx):x.shape[3] - max(0, dx)]
        out[i, :, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
    return out


def train(epochs: int = EPOCHS, log=print) -> nn.Module:
    """Train from scratch with fixed seeds; returns the model in eval mode."""
    from ..sw.datasets import digits
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = (torch.from_numpy(a) for a in digits("train"))
        gen = torch.Generator().manual_seed(SEED)
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for start in range(0, len(x), BATCH):
                idx = order[start:start + BATCH]
                opt.zero_grad()
                loss = loss_fn(model(_augment(x[idx], gen)), y[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            log(f"epoch {epoch + 1:>3}/{epochs}  loss {total / len(x):.4f}")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    return model.eval()


def accuracy(model: nn.Module, split: str = "test") -> float:
    from ..sw.datasets import digits
    x, y = digits(split)
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(x)).argmax(1).numpy()
    return float(np.mean(pred == y))


def main(argv=None):
    from . import weights_path
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(weights_path("lenet-digits")))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    model = train(args.epochs)
    torch.save(model.state_dict(), args.output)
    print(f"float test accuracy {accuracy(model):.4f}; weights written to {args.output}")


if __name__ == "__main__":
    main()
