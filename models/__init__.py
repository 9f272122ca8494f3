"""Trained example ConvNets, weights committed beside their training scripts.

>>> import striate
>>> sorted(striate.models.names())
['dscnn-digits', 'lenet-digits', 'tdnn-digits']
>>> striate.models.dataset("tdnn-digits")
'digit-rows'
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..sw.errors import StriateError

HERE = Path(__file__).parent


def _registry() -> dict:
    """Name -> module with ``build()``, ``train(epochs)``, ``EPOCHS`` and ``DATASET`` (the
    `striate.sw.datasets` data set it reads)."""
    from . import dscnn_digits, lenet_digits, tdnn_digits
    return {"lenet-digits": lenet_digits, "dscnn-digits": dscnn_digits,
            "tdnn-digits": tdnn_digits}


def names() -> list[str]:
    return list(_registry())


def dataset(name: str) -> str:
    """The data set model ``name`` reads (`striate.sw.datasets.DATASETS`)."""
    return _module(name).DATASET


def train(name: str, log=print) -> torch.nn.Module:
    """Train model ``name`` from scratch as its script does (fixed seeds, kernels that give
    the same weights on any x86-64 CPU: `training.train`)."""
    from .training import train as portable_train
    return portable_train(name, log=log)


def accuracy(name: str, model: torch.nn.Module) -> float:
    """Float top-1 of ``model`` on the test split of model ``name``'s data set."""
    from .training import accuracy as top1
    return top1(model, dataset(name))


def build(name: str) -> torch.nn.Module:
    """A freshly initialised (untrained) instance of model ``name``."""
    return _module(name).build()


def weights_path(name: str) -> Path:
    return HERE / f"{name.replace('-', '_')}.pt"


def load(name: str) -> torch.nn.Module:
    """Model ``name`` with its committed trained weights, in eval mode."""
    module = _module(name)
    path = weights_path(name)
    if not path.exists():
        raise StriateError(f"weights of model {name!r} are missing: {path} (train them with "
                           f"`python -m striate.models.{module.__name__.rsplit('.', 1)[-1]}`)")
    model = module.build()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _module(name: str):
    registry = _registry()
    if name not in registry:
        raise StriateError(f"model name must be one of {sorted(registry)}, not {name!r}")
    return registry[name]
