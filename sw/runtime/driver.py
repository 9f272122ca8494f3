"""The host driver: one API for the accelerator on any transport::

    dev = striate.open("verilator", config)
    dev.load(program)
    yq = dev.run(program, xq)                 # same values as program.run_reference(xq)
    dev.last_run.cycles, dev.last_run.utilization

The driver speaks to the hardware only through a `Transport`: 32-bit bus reads and writes
(`striate.sw.mapping.memmap`) and ``wait`` to let it run. Simulated hardware and a board over a serial
line are transports; the driver does not know which one it has.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass

import numpy as np

from ..golden import cycles as cycle_model
from .. import arguments
from . import image, staging
from ..mapping import memmap
from ..config import AcceleratorConfig, MemoryTiming
from ..errors import StriateError
from ..parallel import cores, map_threads
from ..mapping.mapper import survivors
from .program import Program, as_config


class DeviceError(StriateError):
    """The accelerator reported ERROR (the message decodes the code and names the layer)."""


class DeviceTimeout(StriateError):
    """The accelerator did not report DONE in time (the message names the layer it was on)."""


class Transport(abc.ABC):
    """Access to one accelerator's host bus."""

    @abc.abstractmethod
    def write(self, addr: int, words) -> None:
        """Write consecutive 32-bit words from bus address ``addr`` on."""

    @abc.abstractmethod
    def read(self, addr: int, count: int = 1) -> np.ndarray:
        """Read ``count`` consecutive 32-bit words (uint32) from ``addr`` on."""

    @abc.abstractmethod
    def wait(self, cycles: int) -> None:
        """Let the accelerator run for about ``cycles`` clock cycles without bus traffic."""

    #: Whether `write_ext` and `read_ext` reach the external memory directly (simulators). A
    #: `Device` on a transport without reaches it through the accelerator (`staging`).
    ext_backdoor = False

    def write_ext(self, addr: int, data) -> None:
        """Write bytes ``data`` into the external memory from byte ``addr`` on (configurations
        with ``ext_bytes``)."""
        raise StriateError(f"{type(self).__name__} cannot reach an external memory")

    def read_ext(self, addr: int, count: int) -> np.ndarray:
        """Read ``count`` bytes (uint8) of the external memory from byte ``addr`` on."""
        raise StriateError(f"{type(self).__name__} cannot reach an external memory")

    @staticmethod
    def _as_bytes(data) -> bytes:
        """``write_ext``'s data (bytes or a uint8 array of any shape) as bytes."""
        if isinstance(data, np.ndarray):
            return np.ascontiguousarray(data, np.uint8).reshape(-1).tobytes()
        return bytes(data)

    def _ext_range(self, size: int, addr: int, count: int) -> None:
        """For ``write_ext``/``read_ext``: raise unless bytes ``addr .. addr + count - 1`` lie
        in the external memory of ``size`` bytes (0: there is none)."""
        if not size:
            Transport.write_ext(self, addr, b"")
        if not 0 <= addr <= addr + count <= size:
            raise StriateError(f"external memory bytes {addr}..{addr + count} lie outside its "
                               f"{size} bytes")

    def close(self) -> None:
        """Release the simulator or port."""


@dataclass(frozen=True)
class RunStats:
    """Hardware counters of one image: START to DONE, per layer, PE busy; with the ideal cycles
    (MACs / peak MACs per cycle) they give utilization."""

    cycles: int
    layer_cycles: tuple
    pe_busy: int
    ideal_cycles: tuple
    layer_names: tuple

    @classmethod
    def of(cls, program, cycles: int, layer_cycles, pe_busy: int) -> "RunStats":
        """Counters read for ``program``, with its ideal cycles."""
        return cls(cycles=int(cycles), layer_cycles=tuple(int(c) for c in layer_cycles),
                   pe_busy=int(pe_busy),
                   ideal_cycles=tuple(cycle_model.ideal_cycles(l, program.config)
                                      for l in program.layers),
                   layer_names=tuple(l.name for l in program.layers))

    @property
    def utilization(self) -> dict:
        """Per layer name and ``"network"``: ideal cycles / measured cycles (layers that take no
        cycles, concatenations, are left out)."""
        util = {name: ideal / measured for name, ideal, measured in
                zip(self.layer_names, self.ideal_cycles, self.layer_cycles) if measured}
        util["network"] = sum(self.ideal_cycles) / self.cycles
        return util


class Device:
    """An accelerator reached through ``transport``, generated for ``config``.

    With ``spawn`` (a function returning another transport to an accelerator of the same
    configuration, such as another simulator instance) and ``instances`` > 1, `run` shares a
    batch among up to ``instances`` accelerators working in parallel threads: the others are
    spawned on first use, each loaded with the program. This one runs the batch's last images,
    so afterwards its state (memories, counters, ``last_run``) is what one accelerator running
    the whole batch would leave.
    """

    def __init__(self, transport: Transport, config: AcceleratorConfig, name: str = "device",
                 spawn=None, instances: int = 1):
        self.transport, self.config, self.name = transport, config, name
        self.last_run: RunStats | None = None
        self._loaded = None
        self._spawn, self._instances, self._helpers = spawn, instances if spawn else 1, []
        found = self._reg(memmap.CONFIG_ID)
        if found != memmap.config_id(config):
            raise StriateError(f"{name} was generated for configuration id {found:#010x}, "
                               f"not {memmap.config_id(config):#010x} ({config})")

    def _reg(self, index: int) -> int:
        return int(self.transport.read(memmap.address(memmap.REG, index))[0])

    def write_ext(self, addr: int, data) -> None:
        """Write bytes ``data`` (bytes or uint8) into the external memory from byte ``addr``
        on: directly on a simulator, else through the accelerator (`staging`), which
        overwrites the activation memory and program slot 0."""
        data = Transport._as_bytes(data)
        if self.transport.ext_backdoor:
            return self.transport.write_ext(addr, data)
        self.transport._ext_range(self.config.ext_bytes, addr, len(data))
        staging.write(self.transport, self.config, addr, data)

    def read_ext(self, addr: int, count: int) -> np.ndarray:
        """Read ``count`` bytes (uint8) of the external memory from byte ``addr`` on (as
        `write_ext` reaches it)."""
        if self.transport.ext_backdoor:
            return self.transport.read_ext(addr, count)
        self.transport._ext_range(self.config.ext_bytes, addr, count)
        return staging.read(self.transport, self.config, addr, count)

    def load(self, program) -> None:
        """Write the program's descriptors, parameters and weights (once per program)."""
        if not isinstance(program, Program):
            raise StriateError(f"program must be a Program, not {type(program).__name__}")
        if program.config != self.config:
            raise StriateError(f"program was compiled for {program.config}, but the {self.name} "
                               f"is {self.config}; recompile it for this configuration")
        if self._reg(memmap.STATUS) & memmap.BUSY:
            raise StriateError(f"{self.name} is busy; cannot load a program")
        if program.stream is not None:
            for addr, data in image.ext_image(program):
                self.write_ext(addr, data)
            blocks = image.stream_slots(program)
        else:
            blocks = image.program_image(program)
        for addr, words in blocks:
            self.transport.write(addr, words)
        self._loaded = program

    def run(self, program, xq, return_all: bool = False, timeout_cycles: int | None = None,
            progress=None):
        """Run int8 ``N x input_shape`` inputs; return the output like `Program.run_reference`.

        With ``return_all``, the list of every layer's output (``N x ...``), all read back from
        the hardware: a layer whose output a later layer overwrites in the activation banks is
        read after an extra run of the program prefix that ends with it (``last_run`` counts
        the whole program's run). ``timeout_cycles`` bounds each run (a positive int; default:
        four times the cycle model's upper bound plus 10,000); on a timeout the accelerator is
        stopped with CTRL.ABORT, so the device stays usable. ``progress``, if given, is called
        with the number of images done (from the instances' threads when several share the
        batch, see `Device`). An empty
        batch (``N = 0``) starts nothing and returns empty outputs, as the golden model does;
        ``last_run`` is then None.
        """
        if not isinstance(program, Program):
            raise StriateError(f"program must be a Program, not {type(program).__name__}")
        shape = tuple(program.graph.input_shape)
        a = arguments.as_array(xq)
        if a is None or a.dtype != np.int8 or a.ndim != 1 + len(shape) or a.shape[1:] != shape:
            raise StriateError(f"input must be int8 N x {arguments.dims(shape)}, not "
                               f"{arguments.describe(xq if a is None else a)}")
        xq = a
        return_all = arguments.check_flag(return_all, "return_all")
        if timeout_cycles is not None and not (
                isinstance(timeout_cycles, (int, np.integer)) and
                not isinstance(timeout_cycles, (bool, np.bool_)) and timeout_cycles > 0):
            raise StriateError(f"timeout_cycles must be a positive integer or None, not "
                               f"{timeout_cycles!r}")
        if progress is not None and not callable(progress):
            raise StriateError(f"progress must be a callable or None, not {progress!r}")
        if program is not self._loaded:
            self.load(program)
        if len(xq) == 0:
            self.last_run = None
        predicted = sum(cycle_model.program_cycles(program))
        bound = sum(cycle_model.program_cycles(program, bound=True))
        budget = timeout_cycles if timeout_cycles is not None else 4 * bound + 10_000
        n_layers = len(program.layers)
        runs = self._readback_runs(program, return_all)
        work = (program, runs, min(predicted, budget), budget)
        devices = self._devices(len(xq))
        done, lock = [0], threading.Lock()

        def advance():
            with lock:              # instances finish images in their threads
                done[0] += 1
                if progress:
                    progress(done[0])
        if len(devices) == 1:
            outs = self._run_images(work, xq, advance)
        else:
            outs = self._run_parallel(devices, work, xq, advance)
        stacked = {i: np.stack(v) if v else np.zeros((0, *program.layers[i].out_shape), np.int8)
                   for i, v in outs.items()}
        final = stacked[n_layers - 1].reshape(len(xq), *program.graph.output_shape)
        if not return_all:
            return final
        result = [stacked[i] for i in range(n_layers)]
        result[-1] = final
        return result

    def _run_images(self, work, xq, advance, stop=None) -> dict:
        """Run each image of ``xq``: layer index -> the outputs read back, image by image;
        ``advance()`` after each image. ``stop`` (a `threading.Event`), once set, ends the loop
        before the next image."""
        program, runs, first_wait, budget = work
        outs = {i: [] for _, read in runs for i in read}
        for x in xq:
            if stop is not None and stop.is_set():
                break
            for count, read in runs:
                self._start(program, x, count)
                self._wait_done(program, first_wait, budget)
                if count == len(program.layers):
                    self.last_run = self._stats(program)
                for i in read:
                    outs[i].append(self._output(program, i))
            advance()
        return outs

    def _devices(self, images: int) -> list:
        """The accelerators to share ``images`` among, this one last; spawns missing ones."""
        wanted = max(1, min(self._instances, images))
        while len(self._helpers) < wanted - 1:
            self._helpers.append(Device(self._spawn(), self.config,
                                        f"{self.name} #{len(self._helpers) + 2}"))
        return self._helpers[:wanted - 1] + [self]

    def _run_parallel(self, devices: list, work, xq, advance) -> dict:
        """`_run_images` on consecutive slices of ``xq``, one a device, in threads (the
        simulators release the GIL); the first slice's error, if any, is raised."""
        program = work[0]
        bounds = np.linspace(0, len(xq), len(devices) + 1).round().astype(int)
        stop = threading.Event()

        def job(slice_of):
            device, a, b = slice_of
            try:
                if device._loaded is not program:
                    device.load(program)
                return device._run_images(work, xq[a:b], advance, stop)
            except BaseException:
                stop.set()
                raise

        parts = map_threads(job, list(zip(devices, bounds[:-1], bounds[1:])), len(devices))
        return {i: [y for part in parts for y in part[i]] for i in parts[0]}

    def _output(self, program, i: int) -> np.ndarray:
        """Layer ``i``'s output, read back from the activation or the external memory."""
        if program.stream is not None and program.stream.kept[i] is None:
            addr, size = image.output_ext(program, i)
            return image.decode_ext(program, i, self.read_ext(addr, size))
        addr, words = image.output_location(program, i)
        return image.decode_output(program, i, self.transport.read(addr, words))

    @staticmethod
    def _readback_runs(program, every_layer: bool) -> list:
        """``(layers to run, layers to read after it)`` per run of one image: the whole
        program, then, for ``every_layer``, program prefixes that end at the layers a later
        layer overwrote, each read while still intact."""
        n = len(program.layers)
        if not every_layer:
            return [(n, (n - 1,))]
        if program.stream is not None:      # outputs in external memory, or kept on chip
            intact = program.stream.survivors
        else:
            def intact(count):
                return survivors(program.plan, count)
        runs, unread = [(n, intact(n))], set(range(n))
        unread -= set(runs[0][1])
        while unread:
            count = max(unread) + 1
            read = tuple(i for i in intact(count) if i in unread)
            runs.append((count, read))
            unread -= set(read)
        return runs

    def reset(self) -> None:
        """Stop whatever the accelerator runs (CTRL.ABORT); memories keep their contents."""
        self.transport.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.ABORT])
        self._reg(memmap.STATUS)        # the abort acts the cycle after the write

    def _start(self, program, x, layers: int) -> None:
        if self._reg(memmap.STATUS) & memmap.BUSY:
            raise StriateError(f"{self.name} is busy (still running an earlier start)")
        if program.stream is not None:
            addr, data = image.input_ext(program, x)
            self.write_ext(addr, data)
            # the last run's refills, or staging, overwrote the first slots
            if program.stream.refills or not self.transport.ext_backdoor:
                addr, words = image.stream_slots(program)[0]
                self.transport.write(addr, words)
            count = program.stream.steps_before(layers)
        else:
            addr, words = image.input_image(program, x)
            self.transport.write(addr, words)
            count = program.plan.descriptors_before(layers)
        self.transport.write(memmap.address(memmap.REG, memmap.LAYERS), [count])
        self.transport.write(memmap.address(memmap.REG, memmap.CTRL), [memmap.START])

    def _wait_done(self, program, first_wait: int, budget: int) -> None:
        waited = 0
        step = max(64, first_wait)
        while True:
            status = self._reg(memmap.STATUS)
            if status & memmap.FAILED:
                code, layer = self._reg(memmap.ERROR), self._reg(memmap.LAYER)
                raise DeviceError(
                    f"{self.name} stopped with error {code} "
                    f"({memmap.ERRORS.get(code, 'unknown code')}) at layer {layer}"
                    f"{self._layer_name(program, layer)}")
            if status & memmap.DONE and not status & memmap.BUSY:
                return
            if waited >= budget:
                # with external memory the sequencer issues ahead: name the layer running
                layer = self._reg(memmap.RUNNING if self.config.ext_bytes else memmap.LAYER)
                self.reset()
                raise DeviceTimeout(f"{self.name} did not finish within {budget:,} cycles; it was "
                                    f"on layer {layer}{self._layer_name(program, layer)} (stopped "
                                    "with CTRL.ABORT; the next run starts clean)")
            self.transport.wait(min(step, budget - waited))
            waited += min(step, budget - waited)
            step = max(64, first_wait // 8)

    @staticmethod
    def _layer_name(program, index: int) -> str:
        """The name of the layer descriptor ``index`` runs, for a message."""
        if program.stream is not None:
            owners = program.stream.owners
            if 0 <= index < len(owners):
                owner = owners[index]
                return f" ('{program.layers[owner].name}')" if owner >= 0 else \
                    " (a refill of the program memory)"
            return ""
        ran = [layer for layer, run in zip(program.layers, program.plan.executed) if run]
        if 0 <= index < len(ran):
            return f" ('{ran[index].name}')"
        return ""

    def _stats(self, program) -> RunStats:
        plan = program.stream or program.plan
        stamps = self.transport.read(memmap.address(memmap.REG, memmap.LAYER_CYCLES),
                                     sum(plan.executed))
        return RunStats.of(program, self._reg(memmap.CYCLES),
                           plan.per_layer(memmap.layer_cycles(stamps)), self._reg(memmap.PE_BUSY))

    @property
    def instances_used(self) -> int:
        """How many accelerators have run images: this one and those `run` spawned."""
        return 1 + len(self._helpers)

    @property
    def simulated_cycles(self) -> int | None:
        """Clock cycles simulated so far by every instance, or None if a transport does not
        count them (a board)."""
        counts = [getattr(d.transport, "cycles", None) for d in [self, *self._helpers]]
        return None if None in counts else sum(counts)

    def close(self) -> None:
        for helper in self._helpers:
            helper.close()
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


BACKENDS = ("verilator", "pysim", "cocotb")


def open(backend: str = "verilator", config: AcceleratorConfig | dict | None = None,
         baudrate: int = 115200, clock_hz: float = 12e6, timing=None,
         instances: int | None = None) -> Device:
    """Open an accelerator: a simulated one (``"verilator"``, ``"pysim"``, ``"cocotb"``) built
    for ``config`` (an `AcceleratorConfig` or a dict of its parameters; default
    `AcceleratorConfig()`), or one behind the UART bridge on a serial
    port (``"serial:/dev/ttyUSB1"``; ``clock_hz`` is the accelerator's clock, for waits).
    A simulated accelerator with external memory (``config.ext_bytes``) gets the memory model
    of ``timing`` (a `striate.sw.config.MemoryTiming`; default 100 cycles of latency, 8 bytes
    a cycle). On ``"verilator"``, `Device.run` shares a batch among up to ``instances``
    simulator instances in parallel (default: one per CPU core, `cores`); the other
    backends run one."""
    if not isinstance(backend, str):
        raise StriateError(f"backend must be one of {', '.join(BACKENDS)} or serial:PORT, "
                           f"not {backend!r}")
    config = as_config(config)
    if not isinstance(baudrate, (int, np.integer)) or isinstance(baudrate, bool) or baudrate <= 0:
        raise StriateError(f"baudrate must be a positive integer, not {baudrate!r}")
    if not isinstance(clock_hz, (int, float, np.integer, np.floating)) or \
            isinstance(clock_hz, bool) or not 0 < clock_hz < float("inf"):
        raise StriateError(f"clock_hz must be a positive number, not {clock_hz!r}")
    if backend.startswith("serial:"):
        import serial
        from .serial_link import SerialTransport
        path = backend[len("serial:"):]
        try:
            port = serial.Serial(path, baudrate=baudrate, timeout=0.5)
        except (serial.SerialException, OSError) as exc:
            raise StriateError(f"cannot open serial port {path!r}: {exc}") from None
        return Device(SerialTransport(port, clock_hz=clock_hz), config, f"board on {path}")
    if instances is not None and not (isinstance(instances, (int, np.integer)) and
                                      not isinstance(instances, bool) and instances > 0):
        raise StriateError(f"instances must be a positive integer or None, not {instances!r}")
    if backend == "verilator":
        from ...sim.fastsim import VerilatorTransport

        def spawn():
            return VerilatorTransport(config, timing=timing or MemoryTiming())
        return Device(spawn(), config, "verilator simulation", spawn,
                      cores() if instances is None else int(instances))
    if backend == "pysim":
        from ...sim.pysim import PysimTransport
        return Device(PysimTransport(config, timing or MemoryTiming()), config,
                      "Amaranth simulation")
    if backend == "cocotb":
        from ...sim.cocotb_transport import CocotbTransport
        return Device(CocotbTransport(config, timing=timing), config, "cocotb simulation")
    raise StriateError(f"backend must be one of {', '.join(BACKENDS)} or serial:PORT, "
                       f"not {backend!r}")
