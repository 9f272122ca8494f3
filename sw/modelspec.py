"""What the command line accepts as a model: a registered name or a Python file.

A model file defines ``model()``, returning the trained ``nn.Module``, and ``calibration()``,
returning float ``N x C x H x W`` calibration images; it may set ``dataset = "digits"`` so that
accuracies can be measured on that data set's test split.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import StriateError


@dataclass
class ModelSpec:
    name: str
    module: object
    calibration: object
    dataset: str | None


def resolve(spec: str, calibration_images: int = 512) -> ModelSpec:
    """Load the model named or defined by ``spec``."""
    from .. import models
    if spec in models.names():
        from .datasets import digits
        return ModelSpec(spec, models.load(spec), digits("train")[0][:calibration_images],
                         "digits")
    path = Path(spec)
    if path.suffix != ".py" or not path.is_file():
        raise StriateError(f"model must be one of {models.names()} or a Python file defining "
                           f"model() and calibration(), not {spec!r}")
    loader = importlib.util.spec_from_file_location(f"striate_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except Exception as exc:
        raise StriateError(f"model file {spec}: {type(exc).__name__}: {exc}") from None
    for name in ("model", "calibration"):
        if not callable(getattr(module, name, None)):
            raise StriateError(f"model file {spec} must define {name}()")
    return ModelSpec(str(path), module.model(), module.calibration(),
                     getattr(module, "dataset", None))


def float_model(program):
    """The float model a program was compiled from, when it is a registered one (else None)."""
    from .. import models
    name = program.metadata.get("model")
    return models.load(name) if name in models.names() else None
