"""Project exception types. Every error striate raises on bad input is a `StriateError`."""


class StriateError(Exception):
    """Base class of every error striate raises on bad input."""


class UnsupportedLayerError(StriateError):
    """A model contains an op, module or option the compiler cannot lower.

    The message names the op type and its PyTorch module path.
    """


class QuantizationError(StriateError):
    """A layer cannot be quantized within the numerics contract (scale out of range,
    accumulator overflow possible, bias beyond int32)."""


class MappingError(StriateError):
    """A layer does not fit the `AcceleratorConfig` it is compiled for."""


class PlacementError(MappingError):
    """A concatenation's inputs cannot be written into it in place as the graph stands (the
    compiler places them so that they can: a graph it did not write)."""


class ProgramFormatError(StriateError):
    """A program file is truncated, corrupted, foreign or of an unsupported version."""


class ConfigError(StriateError):
    """An `AcceleratorConfig` parameter is out of its valid range."""
