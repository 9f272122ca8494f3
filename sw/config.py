"""`AcceleratorConfig`: the one description of an accelerator instance.

The hardware generator, the compiler's mapper, the golden model's cycle model and the driver's
memory map all derive from it; a change of configuration never needs an edit elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError


DEFAULT_EXT_BYTES = 64 << 20


@dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one accelerator instance.

    Parameters
    ----------
    pe_out : int
        Output channels computed in parallel (rows of the PE array). A power of two.
    pe_in : int
        Reduction lanes per output channel (columns of the PE array): input channels multiplied
        and summed into each accumulator per cycle; also the channels in one activation word.
        A power of two.
    max_width : int
        Widest input map a layer may read (line buffer depth), in pixels.
    max_height : int
        Tallest input map a layer may read, in rows (at most 1023, the descriptor's limit).
        With ``max_width`` it sizes the window generator's counters and coordinates.
    max_kernel : int
        Largest convolution kernel side.
    max_stride : int
        Largest convolution and pooling stride.
    act_bytes : int
        Bytes of the activation memory: one pool that holds every tensor while it is alive (the
        compiler plans their addresses); a map occupies ``ceil(C / pe_in) * pe_in * H * W``
        bytes. Built as two RAMs, even and odd words.
    weight_bytes : int
        Bytes of weight memory for the whole program (weights of all layers stay resident).
    param_entries : int
        Output channel entries of the bias / requantization parameter memory, for all layers.
    program_depth : int
        Layer descriptors the program memory holds.
    bus_width : int
        Host bus data width in bits.
    requant_lanes : int or None
        Output channels the requantizer and the average pool's scaler handle per cycle (a
        power of two dividing ``pe_out``; None: all ``pe_out``). Fewer lanes save the wide
        multipliers and shifters; a conv pixel then needs ``pe_out / requant_lanes`` cycles
        there, and an average-pooled layer's last pixel as many more.
    serial_scale_bits : int or None
        None: each requantizer lane and each average-pool lane multiplies in one cycle (a wide
        multiplier each). An integer k: they use shift-add multipliers that take k bits of the
        31-bit multiplier per cycle instead, and average pooling scales one channel at a time;
        for parts whose DSP blocks all serve the PE array.
    avg_pool : bool
        Average pooling in hardware. False leaves out the pooling scaler's adders and operand
        paths (max pooling stays); the mapper refuses average-pooled layers. For small parts.
    residual_add : bool
        The element-wise add path (`striate.hw.core.eltwise`): residual adds of two maps. False
        leaves it out; the mapper refuses adds. For small parts.
    pool_padding : bool
        Pooling windows that start outside the conv map (pool padding). False leaves out the
        window generator's negative window starts; the mapper refuses pool-padded layers.
    activation_tables : int
        256-entry int8 tables the table memory holds for element-wise functions by table
        (tanh, sigmoid, SiLU, ...: `striate.sw.ir.tables`), looked up as the writer stores each
        value; a program needs one per distinct table. 0 leaves the lookup out; the mapper
        then refuses layers with a table. At most 63 (the descriptor's table field).
    depthwise_kernel : int
        The depthwise datapath for depthwise convolutions (one input channel per output
        channel) with kernels up to ``k x k``: a line buffer of ``k - 1`` rows feeds a ``k x k``
        window of ``pe_in`` channels to the PE array, ``k x k`` taps of each channel on
        ``pe_out / pe_in`` rows of ``pe_in`` lanes, one output pixel per cycle. Needs
        ``k <= pe_in`` and ``k <= pe_out / pe_in``. 0 leaves it out; depthwise layers then run
        as dense convolutions with zero weights across channels (slow, exact). None (the
        default): 3 where that fits, else 0.
    ext_bytes : int
        Bytes of external memory the accelerator reaches through its AXI4 master port
        (`striate.hw.core.dma`), moved to and from the on-chip memories by transfer
        descriptors (`striate.sw.mapping.descriptor.MoveDescriptor`). 0 leaves the port and
        the DMA engine out: every tensor and weight then lives on chip. A power of two,
        at most 4 GiB; needs ``pe_in >= 4`` and weight rows of at least 8 bytes. None (the
        default): 64 MiB where that holds, else 0.
    act_banks : int
        Banks of the activation memory, each ``act_bytes / act_banks`` bytes with ports of
        its own, so a transfer fills or drains one bank while a layer reads and writes
        others. A power of two. None (the default): 8 with external memory (fewer if the
        banks would hold under 8 words), else 1.
    psum_entries : int
        Entries of the partial-sum memory beside the PE array, each the ``pe_out`` 32-bit
        sums of one conv pixel of one output channel group. A layer whose weights for
        ``pe_out`` output channels exceed half the weight memory runs in chunks of input
        channels: every chunk but the last writes its sums there instead of requantizing
        them, every chunk but the first adds them back (``LayerDescriptor.psum_in`` and
        ``psum_out``), so a tile of such a layer may have at most this many conv pixels per
        output channel group (times groups). A power of two; 0 leaves the memory out (such
        layers are then refused). None (the default): 256 with external memory, else 0.
    overlap_setup : bool
        The sequencer fetches the next layer's descriptor and derives its sizes while the
        current layer runs, then checks it and hands it to the datapath when that layer is
        done (a second copy of the descriptor and its derived sizes: about 530 flip-flops on
        the ECP5). After a layer that runs longer than the next one's set-up
        (``LayerDescriptor.WORDS`` cycles plus `striate.sw.mapping.derive.cycles`) the next
        starts 2 cycles after it ends instead of ``LayerDescriptor.WORDS + 3`` plus those.
        False: set-up follows the layer (the ``icebreaker`` and ``ulx3s-sdram`` boards'
        configurations, `striate.hw.platform.boards`: no room for the copy on the UP5K, and
        the SDRAM design's router did not converge with it before the register stages).
    mac_stages : int
        Register stages added to the PE array and the add unit for clock speed (0 to 2): 1
        registers their operands (after the memories' read, the padding select and the
        depthwise select) and puts skid buffers on the fetch's input and output and on the
        array's, a parallel requantizer's and the pool's (or `SerialPost`'s) outputs, so that a
        stall reaches the array, the fetch, the memories' read enables, the window generator,
        the requantizer and the pool from a register; 2 registers their products too, before
        the adder trees. Each stage makes every layer one cycle longer (the pipeline is a
        cycle deeper; where nothing stalls, throughput is the same) and costs a register per
        operand or product bit; the skid buffers (no cycle of their own) a window position, an
        item's operands and weights, a set of sums and a pixel.
    round_stages : int
        Register stages in the rounding shift and clamp of the parallel requantizer, the
        average pool and the add unit (`striate.hw.core.scale.round_clamp`), for clock speed
        (0 to 2): 1 registers its 16-bit window of the product after the coarse shift, 2 also
        the finely shifted value before the rounding add and the clamp. Every stage makes a
        convolution or depthwise layer two cycles longer (the requantizer and the pool each a
        cycle deeper; with ``serial_scale_bits`` they take their three rounding cycles anyway
        and do not change) and an add one, and costs 21 (1) or 10 (2) flip-flops a lane, and
        in the pool a pixel's ``8 * pe_out`` and its tag (the maximum kept beside the stage).
    split_products : bool
        The parallel requantizer's and average pool's multipliers (a biased 33-bit sum, or a
        pool sum, times the 31-bit multiplier) as partial products of at most 17 x 17 bits
        (one MULT18X18D each on the ECP5), registered beside their blocks and summed in the
        next cycle, for clock speed: a convolution or depthwise layer two cycles longer and
        about 130 flip-flops a lane. Needs the parallel requantizer (no
        ``serial_scale_bits``).
    pixel_pairs : bool
        A convolution with at most ``pe_out / 2`` output channels, a column stride of 1 and
        an even number of columns, without pooling or with a max pooling of two columns at
        column stride 2, computes two neighbouring conv pixels at once: the upper half of the
        PE rows takes the next pixel's input word, read from the activation memory's other RAM
        in the same cycle, with the lower half's weights
        (`LayerDescriptor.pair`; the compiler duplicates them). It halves such a layer's
        items. Needs ``pe_out >= 2 * pe_in`` (a pixel's channels in whole words of each half);
        otherwise, or False, no layer pairs (about 4 * pe_in * 8 operand bits of registers and
        multiplexers fewer).
    """

    pe_out: int = 16
    pe_in: int = 4
    max_width: int = 256
    max_height: int = 256
    max_kernel: int = 7
    max_stride: int = 4
    act_bytes: int = 64 * 1024
    weight_bytes: int = 512 * 1024
    param_entries: int = 2048
    program_depth: int = 64
    bus_width: int = 32
    requant_lanes: int | None = None
    serial_scale_bits: int | None = None
    avg_pool: bool = True
    pool_padding: bool = True
    residual_add: bool = True
    activation_tables: int = 16
    depthwise_kernel: int | None = None
    ext_bytes: int | None = None
    act_banks: int | None = None
    psum_entries: int | None = None
    overlap_setup: bool = True
    mac_stages: int = 0
    round_stages: int = 0
    split_products: bool = False
    pixel_pairs: bool = True

    def __post_init__(self):
        limits = {
            "pe_out": (1, 256), "pe_in": (1, 256), "max_width": (1, 1023), "max_height": (1, 1023),
            "max_kernel": (1, 15), "max_stride": (1, 7), "act_bytes": (1, 1 << 25),
            "weight_bytes": (1, 1 << 26), "param_entries": (1, 1 << 16),
            "program_depth": (1, 1 << 10), "bus_width": (32, 32),
            "requant_lanes": (1, 256), "serial_scale_bits": (1, 31),
            "activation_tables": (0, 63), "depthwise_kernel": (0, 15),
            "ext_bytes": (0, 1 << 32), "act_banks": (1, 64),
            "psum_entries": (0, 1 << 16), "mac_stages": (0, 2), "round_stages": (0, 2),
        }
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "bool":
                if not isinstance(value, bool):
                    raise ConfigError(f"AcceleratorConfig.{field.name} must be True or False, "
                                      f"not {value!r}")
                continue
            if field.name in ("requant_lanes", "serial_scale_bits", "depthwise_kernel",
                              "ext_bytes", "act_banks", "psum_entries") and value is None:
                continue
            lo, hi = limits[field.name]
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(
                    f"AcceleratorConfig.{field.name} must be an integer in [{lo}, {hi}], "
                    f"not {value!r}")
        if self.requant_lanes is not None and (self.pe_out % self.requant_lanes
                                               or self.requant_lanes & (self.requant_lanes - 1)):
            raise ConfigError(f"AcceleratorConfig.requant_lanes must be a power of two dividing "
                              f"pe_out ({self.pe_out}), not {self.requant_lanes}")
        if self.split_products and self.serial_scale_bits:
            raise ConfigError("AcceleratorConfig.split_products splits the parallel "
                              "requantizer's multipliers; a configuration with "
                              "serial_scale_bits has none")
        if self.ext_bytes is None:
            object.__setattr__(self, "ext_bytes", DEFAULT_EXT_BYTES if self.pe_in >= 4 and
                               self.pe_out * self.pe_in >= 8 else 0)
        if self.act_banks is None:
            banks = 8 if self.ext_bytes else 1
            while banks > 1 and self.act_bytes // banks < 8 * self.pe_in:
                banks //= 2
            object.__setattr__(self, "act_banks", banks)
        if self.psum_entries is None:
            object.__setattr__(self, "psum_entries", 256 if self.ext_bytes else 0)
        fits = min(self.pe_in, self.pe_out // self.pe_in, self.max_kernel)
        if self.depthwise_kernel is None:
            object.__setattr__(self, "depthwise_kernel", 3 if fits >= 3 else 0)
        if self.depthwise_kernel and not 2 <= self.depthwise_kernel <= fits:
            raise ConfigError(f"AcceleratorConfig.depthwise_kernel must be 0 or in [2, {fits}] "
                              f"(at most pe_in, pe_out / pe_in and max_kernel), not "
                              f"{self.depthwise_kernel}")
        for name in ("pe_out", "pe_in", "act_bytes", "weight_bytes", "param_entries",
                     "ext_bytes", "act_banks", "psum_entries"):
            value = getattr(self, name)
            if value & (value - 1):
                raise ConfigError(f"AcceleratorConfig.{name} must be a power of two, not {value}")
        if self.ext_bytes and (self.pe_in < 4 or self.pe_out * self.pe_in < 8):
            raise ConfigError(f"AcceleratorConfig.ext_bytes needs pe_in >= 4 and pe_out * pe_in "
                              f">= 8 (the transfer engine moves 32-bit words, two a cycle), "
                              f"not pe_in={self.pe_in}, pe_out={self.pe_out}")
        if self.act_bytes // self.act_banks < 8 * self.pe_in:
            raise ConfigError(f"AcceleratorConfig.act_banks must leave each bank at least 8 "
                              f"words of {self.pe_in} bytes, not {self.act_banks} banks of "
                              f"{self.act_bytes} bytes")
        for name, unit, words in (("act_bytes", self.pe_in, 4),
                                  ("weight_bytes", self.pe_out * self.pe_in, 1),
                                  ("param_entries", self.pe_out, 1)):
            if getattr(self, name) < unit * words:
                raise ConfigError(f"AcceleratorConfig.{name} must hold at least {words} "
                                  f"word{'s' * (words > 1)} of {unit}, not {getattr(self, name)}")

    @property
    def requant_parallel(self) -> int:
        """Output channels requantized per cycle."""
        return self.requant_lanes or self.pe_out

    @property
    def pairs(self) -> bool:
        """Whether the hardware computes pixel pairs (``pixel_pairs``, where it applies)."""
        return self.pixel_pairs and self.pe_out >= 2 * self.pe_in

    @property
    def macs_per_cycle(self) -> int:
        """Peak int8 multiply-accumulates per clock cycle of the PE array."""
        return self.pe_out * self.pe_in

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AcceleratorConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"AcceleratorConfig parameters must be a dict, not "
                              f"{type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"AcceleratorConfig has no parameters {sorted(unknown)!r}")
        return cls(**values)


@dataclass(frozen=True)
class MemoryTiming:
    """The external memory as the compiler's cost model and the simulators see it: first-word
    latency in accelerator cycles and bandwidth in bytes per cycle (1 to 8, the AXI port's
    64-bit beat). The simulators' memory model (`striate.sim.extmem`) has exactly this
    timing, and the cycle model predicts the counters for it."""

    latency: int = 100
    bytes_per_cycle: int = 8

    def __post_init__(self):
        if not isinstance(self.latency, int) or isinstance(self.latency, bool) or \
                not 1 <= self.latency <= 100_000:
            raise ConfigError(f"memory latency must be an integer from 1 to 100000 cycles, "
                              f"not {self.latency!r}")
        if not isinstance(self.bytes_per_cycle, int) or isinstance(self.bytes_per_cycle, bool) \
                or not 1 <= self.bytes_per_cycle <= 8:
            raise ConfigError(f"memory bandwidth must be an integer from 1 to 8 bytes per "
                              f"cycle, not {self.bytes_per_cycle!r}")

    @property
    def beat_interval(self) -> int:
        """Cycles between 8-byte beats at full rate."""
        return -(-8 // self.bytes_per_cycle)
