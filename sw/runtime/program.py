"""`Program`: a compiled network for one `AcceleratorConfig` (descriptors, integer parameters,
memory plan) and the host-side scales that connect it to floats."""

from __future__ import annotations

import numpy as np

from .. import arguments
from ..golden import model as golden
from ..ir import numerics
from ..config import AcceleratorConfig, MemoryTiming
from ..errors import ConfigError, MappingError, PlacementError, StriateError
from ..ir.graph import QGraph
from ..mapping.mapper import MemoryPlan, describe, describe_unplaced, plan_memory
from ..mapping.stream import StreamPlan, stream_plan

STREAMING = ("auto", "always", "never")


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
        Of a program on chip; empty for a streamed one.
    plan : MemoryPlan or None
        Where a program on chip keeps everything (None when streamed).
    stream : StreamPlan or None
        A streamed program's external memory plan and transfers (`striate.sw.mapping.stream`):
        with ``streaming="always"``, or ``"auto"`` on a configuration with external memory
        when the network does not fit on chip.
    timing : MemoryTiming
        The external memory the streamed program was planned for (its cost model's).
    steps : tuple
        What the sequencer runs, in order: ``(layer, LayerDescriptor)`` per layer (or tile)
        and ``(None, MoveDescriptor)`` per transfer.
    """

    def __init__(self, graph: QGraph, config: AcceleratorConfig, metadata: dict | None = None,
                 timing: MemoryTiming | None = None, streaming: str = "auto"):
        if streaming not in STREAMING:
            raise StriateError(f"streaming must be one of {', '.join(STREAMING)}, not "
                               f"{streaming!r}")
        if timing is not None and not isinstance(timing, MemoryTiming):
            raise StriateError(f"timing must be a MemoryTiming or None, not "
                               f"{type(timing).__name__}")
        self.graph = graph
        self.config = config
        self.metadata = dict(metadata or {})   # e.g. {"model": "lenet-digits"}; saved with it
        self.timing = timing or MemoryTiming()
        self.plan: MemoryPlan | None = None
        self.stream: StreamPlan | None = None
        if streaming == "always":
            self.stream = stream_plan(graph, config, self.timing)
        elif streaming == "auto" and config.ext_bytes:
            try:
                self.plan = plan_memory(graph, config)
            except PlacementError:      # the graph itself cannot be placed: no fallback
                raise
            except MappingError as on_chip:
                try:
                    self.stream = stream_plan(graph, config, self.timing)
                except MappingError as streamed:
                    raise MappingError(f"{streamed} (and on chip: {on_chip})") from None
        else:
            self.plan = plan_memory(graph, config)
        self.streaming = streaming
        if self.stream is None:
            self.descriptors = tuple(describe(layer, i, self.plan)
                                     for i, layer in enumerate(graph.layers))
            self.steps = tuple((layer, desc) for layer, desc in zip(graph.layers,
                                                                    self.descriptors) if desc)
        else:
            self.descriptors = ()
            self.steps = self.stream.steps

    @property
    def layer_descriptors(self) -> tuple:
        """Per layer, its descriptor: placed on chip, or, for a streamed program, its whole
        layer at address 0 (the geometry its tiles come from); None for a concatenation."""
        if self.stream is None:
            return self.descriptors
        return tuple(describe_unplaced(layer, self.stream.depthwise[i], self.stream.table[i])
                     for i, layer in enumerate(self.layers))

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
