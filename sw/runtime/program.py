"""`Program`: a compiled network for one `AcceleratorConfig` (descriptors, integer parameters,
memory plan) and the host-side scales that connect it to floats."""

from __future__ import annotations

import numpy as np

from .. import arguments
from ..golden import model as golden
from ..ir import numerics
from ..config import AcceleratorConfig
from ..errors import ConfigError, StriateError
from ..ir.graph import QGraph
from ..mapping.mapper import MemoryPlan, describe, plan_memory


def as_config(config) -> AcceleratorConfig:
    """``config`` as an `AcceleratorConfig`: None gives the default one, a dict its parameters
    (`AcceleratorConfig.from_dict`); anything else raises `ConfigError`."""
    if config is None:
        return AcceleratorConfig()
    if isinstance(config, dict):
        return AcceleratorConfig.from_dict(config)
    if not isinstance(config, AcceleratorConfig):
        raise ConfigError(f"config must be an AcceleratorConfig or a dict of its parameters, "
                          f"not {type(config).__name__}")
    return config


class Program:
    """A network compiled for ``config``.

    Attributes
    ----------
    config : AcceleratorConfig
        The configuration the program was compiled and mapped for.
    graph : QGraph
        The fused integer graph; ``graph.layers[i]`` is executed by ``descriptors[i]`` (None
        for a concatenation, which its inputs' producers write in place).
    descriptors : tuple of LayerDescriptor or None
    plan : MemoryPlan
    """

    def __init__(self, graph: QGraph, config: AcceleratorConfig, metadata: dict | None = None):
        self.graph = graph
        self.config = config
        self.metadata = dict(metadata or {})   # e.g. {"model": "lenet-digits"}; saved with it
        self.plan: MemoryPlan = plan_memory(graph, config)
        self.descriptors = tuple(describe(layer, i, self.plan)
                                 for i, layer in enumerate(graph.layers))

    @property
    def layers(self) -> tuple:
        return self.graph.layers

    @property
    def input_scale(self) -> float:
        return self.graph.input_scale

    @property
    def output_scale(self) -> float:
        return self.graph.output_scale

    def quantize_input(self, x) -> np.ndarray:
        """Float ``N x input_shape`` (images or vectors, torch or NumPy) -> int8 at the input scale.

        Values beyond the int8 range saturate (infinities too); NaN raises `StriateError`.
        """
        shape = tuple(self.graph.input_shape)
        a = arguments.as_array(x)
        if a is None:
            raise StriateError(f"input must be an N x {arguments.dims(shape)} array of real numbers, "
                               f"not {arguments.describe(x)}")
        if a.ndim != 1 + len(shape) or tuple(a.shape[1:]) != shape:
            raise StriateError(f"input must be N x {arguments.dims(shape)}, not "
                               f"{arguments.dims(a.shape)}")
        nan = int(np.isnan(a).sum()) if a.dtype.kind == "f" else 0
        if nan:
            raise StriateError(f"input must be free of NaN, found {nan} NaN")
        return numerics.quantize(a, self.input_scale)

    def run_reference(self, xq, return_all: bool = False):
        """Run the golden model; see `golden.run_graph`."""
        return golden.run_graph(self.graph, xq, return_all=return_all)

    def dequantize_output(self, yq) -> np.ndarray:
        """int8 output -> float32 at the output scale."""
        a = arguments.as_array(yq)
        if a is None or a.dtype != np.int8:
            raise StriateError(f"output must be an int8 array, not {arguments.describe(yq)}")
        return (a.astype(np.float64) * self.output_scale).astype(np.float32)

    def save(self, path) -> None:
        """Write the program file atomically (see `fileformat`)."""
        from .fileformat import save_program
        save_program(self, path)

    def summary(self) -> str:
        """One line per layer: name, op, shapes, MACs."""
        rows = []
        for layer in self.layers:
            pool = f"+{layer.pool}pool" if layer.pool != "none" else ""
            rows.append(f"{layer.name:<16} {layer.op}{pool:<9} {'x'.join(map(str, layer.in_shape)):>10}"
                        f" -> {'x'.join(map(str, layer.out_shape)):<10} clamp [{layer.lo}, "
                        f"{layer.hi}]  {layer.macs:>9,} MACs")
        return "\n".join(rows)
