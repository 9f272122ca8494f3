"""Reproducible training of the example models: fixed seeds, one thread, deterministic and
portable kernels, Adam with cosine decay, cross-entropy, optional augmentation of each batch.

Float results of PyTorch's CPU kernels depend on the CPU: ATen picks SIMD kernels (AVX2,
AVX-512) and MKL its code path by what the CPU offers, and each sums in its own order. Training
therefore runs in a process started with `PORTABLE_ENV` (ATen's kernels without SIMD dispatch,
MKL in its conditional-numerical-reproducibility mode, which gives the same results on every
x86-64 CPU), with oneDNN and NNPACK off. One kernel stays CPU-dependent in that mode: ATen's float
square root goes through MKL's vector maths, which is not correctly rounded, and its last bit
differs between CPUs (an AVX-512 Xeon and an AVX2 EPYC, emulated by QEMU, disagree on about
one value in seven). So the optimiser (`Adam`) takes its square roots with NumPy, whose square
root is IEEE's, and the weights are the same bit for bit on any x86-64 machine
(`tests/test_models.py` trains under an emulated AMD CPU to check it). Those settings take
effect only when set before PyTorch loads, so `train` starts a fresh Python process unless it
runs in one already (`portable`).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn


#: The environment of a training process (see the module docstring).
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def portable() -> bool:
    """Whether this process computes with the portable kernels (`PORTABLE_ENV`)."""
    return torch.backends.cpu.get_cpu_capability() == "DEFAULT" and \
        os.environ.get("MKL_CBWR") == PORTABLE_ENV["MKL_CBWR"]


def train(name: str, epochs: int | None = None, log=print) -> nn.Module:
    """Model ``name`` trained from scratch as its module does (fixed seeds, portable kernels):
    here if this process is `portable`, else in a fresh process whose lines go to ``log``."""
    from . import _module
    from ..sw.errors import StriateError
    module = _module(name)
    epochs = module.EPOCHS if epochs is None else epochs
    if portable():
        return module.train(epochs, log=log)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "weights.pt")
        command = [sys.executable, "-m", f"{__package__}.{module.__name__.rsplit('.', 1)[-1]}",
                   "-o", out, "--epochs", str(epochs), "--no-summary"]
        with subprocess.Popen(command, env={**os.environ, **PORTABLE_ENV}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as child:
            lines = []
            for line in child.stdout:
                lines.append(line.rstrip("\n"))
                log(lines[-1])
        if child.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(lines[-15:])
            raise StriateError(f"training {name} failed (exit {child.returncode}):\n{tail}")
        model = module.build()
        model.load_state_dict(torch.load(out, map_location="cpu", weights_only=True))
    return model.eval()


def fit(build, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, batch: int = 64,
        lr: float = 2e-3, weight_decay: float = 1e-4, augment=None, log=print) -> nn.Module:
    """Train ``build()`` on float inputs ``x`` and labels ``y`` from scratch; returns the model
    in eval mode. ``augment(batch, generator)`` transforms each training batch."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.backends.mkldnn.flags(enabled=False), torch.backends.nnpack.flags(enabled=False):
        return _fit(build, x, y, epochs, seed, batch, lr, weight_decay, augment, log, threads)


def _fit(build, x, y, epochs, seed, batch, lr, weight_decay, augment, log, threads):
    try:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        model = build()
        opt = Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
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


class Adam(torch.optim.Optimizer):
    """`torch.optim.Adam`'s update (L2 weight decay added to the gradient, no AMSGrad) with the
    square root of the second moment correctly rounded (NumPy's), not ATen's (see the module
    docstring): the same weights on any x86-64 CPU."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "Adam.step takes no closure"
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] \
                    else p.grad
                state = self.state[p]
                if not state:
                    state.update(step=0, mean=torch.zeros_like(p), square=torch.zeros_like(p))
                state["step"] += 1
                t = state["step"]
                state["mean"].lerp_(grad, 1 - beta1)
                state["square"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                root = torch.from_numpy(np.sqrt(state["square"].numpy()))
                denom = (root / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                p.addcdiv_(state["mean"], denom, value=-group["lr"] / (1 - beta1 ** t))


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
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model = train(name, args.epochs)
    torch.save(model.state_dict(), args.output)
    if args.no_summary:
        return
    print(f"float test accuracy {accuracy(model, module.DATASET):.4f}; weights written to "
          f"{args.output}")
