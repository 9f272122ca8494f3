"""striate: compile trained PyTorch ConvNets to an int8 accelerator, bit-exact with a NumPy
golden model.

>>> import striate
>>> striate.AcceleratorConfig().macs_per_cycle
64

The compiler, models and data sets (which need PyTorch or scikit-learn) load on first use, so
``import striate`` stays light inside simulators.
"""

import importlib

from .sw.config import AcceleratorConfig
from .sw.errors import (ConfigError, MappingError, ProgramFormatError, QuantizationError,
                        StriateError, UnsupportedLayerError)
from .sw.runtime.fileformat import load_program
from .sw.runtime.program import Program

_LAZY = {"compile": ("striate.sw.compiler", "compile"), "datasets": ("striate.sw.datasets", None),
         "models": ("striate.models", None), "open": ("striate.sw.runtime.driver", "open")}

__all__ = ["compile", "open", "load_program", "Program", "AcceleratorConfig", "datasets", "models",
           "StriateError", "UnsupportedLayerError", "ProgramFormatError", "QuantizationError",
           "MappingError", "ConfigError"]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'striate' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value
