"""Reproducible training of the example models: fixed seeds, one thread, deterministic
kernels, Adam with cosine decay, cross-entropy, optional augmentation of each batch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def fit(build, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, batch: int = 64,
        lr: float = 2e-3, weight_decay: float = 1e-4, augment=None, log=print) -> nn.Module:
    """Train ``build()`` on float inputs ``x`` and labels ``y`` from scratch; returns the model
    in eval mode. ``augment(batch, generator)`` transforms each training batch."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for start in range(0, len(x), batch):
                idx = order[start:start + batch]
                opt.zero_grad()
                inputs = x[idx] if augment is None else augment(x[idx], gen)
                loss = loss_fn(model(inputs), y[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            log(f"epoch {epoch + 1:>3}/{epochs}  loss {total / len(x):.4f}")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    return model.eval()


def shift(x: torch.Tensor, gen: torch.Generator, most: int = 2) -> torch.Tensor:
    """Shift each image (``N x C x H x W``) by up to ``most`` pixels each way (zero fill)."""
    shifts = torch.randint(-most, most + 1, (x.shape[0], 2), generator=gen)
    out = torch.zeros_like(x)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        src = x[i, :, max(0, -dy):x.shape[2] - max(0, dy), max(0, -dx):x.shape[3] - max(0, dx)]
        out[i, :, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
    return out


def accuracy(model: nn.Module, dataset: str, split: str = "test") -> float:
    """Float top-1 of ``model`` on split ``split`` of data set ``dataset``."""
    from ..sw.datasets import load
    x, y = load(dataset, split)
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(x)).argmax(1).numpy()
    return float(np.mean(pred == y))


def script(name: str, argv=None) -> None:
    """``python -m striate.models.<module>``: train model ``name`` as its module does and write
    its committed weights (or ``-o FILE``)."""
    import argparse
    from . import _module, weights_path
    module = _module(name)
    parser = argparse.ArgumentParser(description=module.__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(weights_path(name)))
    parser.add_argument("--epochs", type=int, default=module.EPOCHS)
    args = parser.parse_args(argv)
    model = module.train(args.epochs)
    torch.save(model.state_dict(), args.output)
    print(f"float test accuracy {accuracy(model, module.DATASET):.4f}; weights written to "
          f"{args.output}")
