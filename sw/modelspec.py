"""What the command line accepts as a model and as data.

A model is a registered name (``lenet-digits``) or a Python file that defines ``model()``,
returning the trained ``nn.Module``, and ``calibration()``, returning float ``N x C x H x W``
calibration images (not needed when they come from ``--calibration-data FILE.npy``). The file is
run like a script: its folder is on ``sys.path`` while it loads and while ``model()`` and
``calibration()`` run, and ``__file__`` is set. It may set ``dataset`` to a data set of
`striate.sw.datasets.DATASETS` (``"digits"`` for a model of ``1 x 16 x 16`` digits,
``"digit-rows"`` for one of ``16 x 16`` sequences) so that accuracies can be measured on that
data set's test split.

Data to run a program on (`inputs`) is the program's data set, a ``.npy`` file holding the inputs,
a ``.npz`` file holding inputs ``x`` and optionally integer labels ``y``, or random int8 inputs.
Float inputs are quantized at the program's input scale; int8 inputs are used as they are.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import StriateError

NPZ_INPUTS, NPZ_LABELS = "x", "y"     # array names in a .npz data file


def _datasets() -> dict:
    from .datasets import DATASETS
    return DATASETS


@dataclass
class ModelSpec:
    name: str
    module: object
    calibration: object
    dataset: str | None


@dataclass
class Inputs:
    """Inputs to run a program on: ``xq`` int8 ``N x C x H x W``; ``x`` the float inputs when
    they were given as floats (else None); ``y`` int64 labels ``N`` (or None); ``source`` says
    where they come from, for messages."""
    xq: np.ndarray
    x: np.ndarray | None
    y: np.ndarray | None
    source: str


def resolve(spec: str, calibration_images: int = 512, calibration_data=None) -> ModelSpec:
    """Load the model named or defined by ``spec``. ``calibration_images`` is the number of
    training images a registered model calibrates on; ``calibration_data``, a ``.npy`` path,
    replaces them, or a model file's ``calibration()``."""
    from .. import models
    from .compiler import check_calibration
    calibration = None if calibration_data is None else _load_calibration(calibration_data)
    if spec in models.names():
        net = models.load(spec)
        dataset = models.dataset(spec)
        if calibration is None:
            from .datasets import load
            calibration = load(dataset, "train")[0][:calibration_images]
        else:
            check_calibration(net, calibration,
                              f"calibration data file {calibration_data} must hold")
        return ModelSpec(spec, net, calibration, dataset)
    path = Path(spec)
    if path.suffix != ".py" or not path.is_file():
        raise StriateError(f"model must be one of {models.names()} or a Python file defining "
                           f"model() and calibration(), not {spec!r}")
    where = f"model file {spec}"
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)          # the file may import its neighbours, as a script would
    try:
        module = _import(path, where)
        wanted = ("model",) if calibration is not None else ("model", "calibration")
        for name in wanted:
            if not callable(getattr(module, name, None)):
                hint = "" if name == "model" else " (or give --calibration-data FILE.npy)"
                raise StriateError(f"{where} must define {name}(){hint}")
        net = _call(module.model, where)
        if calibration is None:
            calibration = _call(module.calibration, where)
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    import torch.nn as nn
    if not isinstance(net, nn.Module):
        raise StriateError(f"{where}: model() must return a torch.nn.Module, not "
                           f"{type(net).__name__}")
    check_calibration(net, calibration, f"{where}: calibration() must return"
                       if calibration_data is None
                       else f"calibration data file {calibration_data} must hold")
    dataset = getattr(module, "dataset", None)
    datasets = _datasets()
    if dataset is not None and dataset not in datasets:
        raise StriateError(f"{where}: dataset must be one of {list(datasets)} or unset, not "
                           f"{dataset!r}")
    if dataset is not None and tuple(np.shape(calibration)[1:]) != datasets[dataset][1]:
        want = " x ".join(map(str, datasets[dataset][1]))
        raise StriateError(f"{where}: dataset = {dataset!r} needs a model of {want} inputs, "
                           f"not of {' x '.join(map(str, np.shape(calibration)[1:]))} inputs")
    return ModelSpec(str(path), net, calibration, dataset)


def _import(path: Path, where: str):
    name = f"striate_user_model_{path.stem}"
    loader = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module          # dataclasses and pickling look their module up there
    try:
        loader.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise StriateError(f"{where}: {type(exc).__name__}: {exc}") from None
    return module


def _call(function, where: str):
    try:
        return function()
    except StriateError:
        raise
    except (Exception, SystemExit) as exc:
        raise StriateError(f"{where}: {function.__name__}() raised {type(exc).__name__}: "
                           f"{exc}") from None


def _load_array(path, what: str):
    """``np.load`` of a ``.npy`` or ``.npz`` file, or `StriateError` naming it."""
    path = Path(path)
    if path.suffix not in (".npy", ".npz"):
        raise StriateError(f"{what} {path} must be a .npy or .npz file, not "
                           f"{path.suffix or path.name!r}")
    if not path.is_file():
        raise StriateError(f"{what} {path} does not exist" if not path.exists() else
                           f"{what} {path} must be a file, not a folder")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and magic[:4] != b"PK\x03\x04":
        raise StriateError(f"{what} {path} must be a NumPy .npy or .npz file (np.save, np.savez), "
                           f"not a file starting with {magic!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {key: loaded[key] for key in loaded.files}
        return loaded
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise StriateError(f"{what} {path} must hold arrays of numbers, not Python "
                               f"objects") from None
        raise StriateError(f"{what} {path} cannot be read: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise StriateError(f"{what} {path} cannot be read: {exc}") from None


def _load_calibration(path) -> np.ndarray:
    what = "calibration data file"
    x = _load_array(path, what)
    if isinstance(x, dict):
        raise StriateError(f"{what} {path} must be a .npy file of one array, not a .npz archive")
    if x.dtype.kind != "f":
        raise StriateError(f"{what} {path} must hold float N x C x H x W images, not {x.dtype}")
    return x


def inputs(program, data=None, random=None, images=None, seed: int = 0,
           program_name: str = "the program") -> Inputs:
    """The inputs to run ``program`` on: the ``data`` file (``.npy``: the inputs; ``.npz``:
    inputs ``x`` and optionally labels ``y``), else ``random`` random int8 inputs (from
    ``seed``), else the test split of the data set in the program's metadata. ``images`` keeps
    the first that many. Raises `StriateError` naming the file and what is wrong with it."""
    if images is not None and not (isinstance(images, int) and images > 0):
        raise StriateError(f"--images must be a positive number of inputs, not {images!r}")
    shape = tuple(program.graph.input_shape)
    if data is not None:
        result = _data_file(program, Path(data), images)
    elif random is not None:
        if not (isinstance(random, int) and random > 0):
            raise StriateError(f"--random must be a positive number of inputs, not {random!r}")
        n = random if images is None else min(random, images)
        xq = np.random.default_rng(seed).integers(-128, 128, (n, *shape), dtype=np.int8)
        result = Inputs(xq, None, None, f"{n} random int8 inputs from seed {seed}")
    else:
        dataset = program.metadata.get("dataset")
        datasets = _datasets()
        if dataset not in datasets or shape != datasets[dataset][1]:
            raise StriateError(f"{program_name} was compiled with no data set to run on; give "
                               f"its inputs with --data FILE (.npy or .npz) or --random N")
        from .datasets import load
        x, y = load(dataset, "test")
        x, y = x[:images], y[:images]
        result = Inputs(program.quantize_input(x), x, y, f"{len(x)} {dataset} test inputs")
    return result


def _data_file(program, path: Path, images) -> Inputs:
    what = "data file"
    shape = tuple(program.graph.input_shape)
    loaded = _load_array(path, what)
    labels = None
    if isinstance(loaded, dict):
        if NPZ_INPUTS not in loaded or set(loaded) - {NPZ_INPUTS, NPZ_LABELS}:
            found = ", ".join(map(repr, loaded)) or "no arrays"
            raise StriateError(f"{what} {path} must hold arrays named {NPZ_INPUTS!r} (inputs) and "
                               f"optionally {NPZ_LABELS!r} (labels), not {found}")
        x, labels = loaded[NPZ_INPUTS], loaded.get(NPZ_LABELS)
        where = f"{what} {path}: array {NPZ_INPUTS!r}"
    else:
        x, where = loaded, f"{what} {path}"
    if x.dtype.kind != "f" and x.dtype != np.int8:
        raise StriateError(f"{where} must hold float inputs (quantized at the program's input "
                           f"scale) or int8 inputs (used as they are), not {x.dtype}")
    dims = " x ".join(map(str, shape))
    if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != shape:
        hint = f" (save one input as 1 x {dims})" if tuple(x.shape) == shape else ""
        raise StriateError(f"{where} must be N x {dims} for this program, not "
                           f"{' x '.join(map(str, x.shape)) or 'a scalar'}{hint}")
    if len(x) == 0:
        raise StriateError(f"{where} must hold at least one input, not 0 x {dims}")
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise StriateError(f"{where} must be free of NaN, found {int(np.isnan(x).sum())} NaN")
    if labels is not None:
        classes = math.prod(program.graph.output_shape)
        if labels.dtype.kind not in "iu" or labels.shape != (len(x),) or \
                labels.min() < 0 or labels.max() >= classes:
            detail = (f"{labels.dtype} of shape {' x '.join(map(str, labels.shape)) or '()'}"
                      if labels.dtype.kind not in "iu" or labels.shape != (len(x),) else
                      f"values {labels.min()}..{labels.max()}")
            raise StriateError(f"{what} {path}: labels {NPZ_LABELS!r} must be {len(x)} integers "
                               f"in 0..{classes - 1}, not {detail}")
        labels = labels.astype(np.int64)[:images]
    x = x[:images]
    if x.dtype == np.int8:
        return Inputs(x, None, labels, f"{len(x)} int8 inputs from {path}")
    return Inputs(program.quantize_input(x), x.astype(np.float32), labels,
                  f"{len(x)} float inputs from {path}, quantized at scale "
                  f"{program.input_scale:.6g}")


def float_model(program):
    """The float model a program was compiled from, when it is a registered one (else None)."""
    from .. import models
    name = program.metadata.get("model")
    return models.load(name) if name in models.names() else None
