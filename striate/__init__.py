"""striate: compile trained PyTorch ConvNets to an int8 accelerator, bit-exact with a NumPy
golden model.

>>> import striate
>>> striate.AcceleratorConfig().macs_per_cycle
64
"""

from .sw import datasets
from .sw.compiler import compile
from .sw.config import AcceleratorConfig
from .sw.errors import (ConfigError, MappingError, ProgramFormatError, QuantizationError,
                        StriateError, UnsupportedLayerError)
from .sw.fileformat import load_program
from .sw.program import Program
from . import models

__all__ = ["compile", "load_program", "Program", "AcceleratorConfig", "datasets", "models",
           "StriateError", "UnsupportedLayerError", "ProgramFormatError", "QuantizationError",
           "MappingError", "ConfigError"]
