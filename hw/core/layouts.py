"""Struct layouts of the datapath streams and the descriptor, derived from the configuration and
`striate.sw.mapping.descriptor.LayerDescriptor` (never restated by hand)."""

from __future__ import annotations

from amaranth.hdl import Const, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In

from ...sw.mapping import derive
from ...sw.config import AcceleratorConfig
from ...sw.mapping.descriptor import LayerDescriptor, MoveDescriptor
from ...sw.mapping.memmap import ACT, PARAMS, TABLES, WEIGHTS, bits_for, memories

ACC = signed(32)


def depthwise_port(config: AcceleratorConfig) -> dict:
    """The ``dw`` input of a block that treats a depthwise layer's pixels apart (high while
    one runs), on a configuration with the depthwise window."""
    return {"dw": In(1)} if config.depthwise_kernel else {}


def depthwise_flag(block):
    """``block.dw``, or a constant 0 on a configuration without the depthwise window."""
    return block.dw if block._l.config.depthwise_kernel else Const(0, 1)


def descriptor_layout(kind=LayerDescriptor) -> data.StructLayout:
    return data.StructLayout({name: signed(bits) if is_signed else unsigned(bits)
                              for name, bits, is_signed in kind.fields_layout()})


class Layouts:
    """Every stream payload and address width of one configuration."""

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        po, pi = config.pe_out, config.pe_in
        mems = memories(config)
        self.act_addr = bits_for(mems[ACT].depth)
        self.w_addr = bits_for(mems[WEIGHTS].depth)
        self.p_addr = bits_for(mems[PARAMS].depth)
        self.t_addr = bits_for(mems[TABLES].depth) if TABLES in mems else 1
        # Width of the sequencer's derived sizes (`striate.sw.mapping.derive`): a legal layer's products
        # are below 64 * bank depth (window terms: strides and pads <= 7 times an input row)
        # or 2 * weight depth (weight words).
        self.size = max(self.act_addr + 7, self.w_addr + 2)
        bounded = derive.limits(config)
        self.derived = {name: min(self.size, bounded[name].bit_length()) if name in bounded
                        else self.size for name in derive.results(config)}  # result widths
        if "m_end" in self.derived:     # a transfer's end: a byte address, one past
            self.derived["m_end"] = MoveDescriptor.bits("local_addr") + 1
        # Widths of the window generator's geometry (`striate.hw.core.window`) for layers that pass
        # the sequencer's checks: strides are at most max_stride; an input map is at most
        # max_width by max_height, and conv and pooled maps, kernels and window starts exceed
        # it by at most four paddings (and stay within the descriptor's size fields).
        self.stride = config.max_stride.bit_length()
        self.pad = LayerDescriptor.bits("pad_h")
        sizes, pads = LayerDescriptor.bits("in_h"), 4 * ((1 << self.pad) - 1)
        self.cols = min(sizes, (config.max_width + pads).bit_length())
        self.rows = min(sizes, (config.max_height + pads).bit_length())
        # An average pool's running sum: int8 pixels over at most the whole conv map, which
        # is under 2**rows by 2**cols pixels.
        self.pool_sum = signed(8 + self.rows + self.cols)
        # Position of an output pixel, carried with the work so later stages need no counters:
        # its output channel group (a depthwise layer's: its channel group, at most one per
        # parameter entry) and word offset.
        self.tag = data.StructLayout({"og": bits_for(config.param_entries) + 1,
                                      "pix": self.act_addr, "pool_first": 1, "pool_last": 1})
        # The depthwise window's controls (`striate.hw.core.dwwindow`): the line buffer column
        # of the new word, how many window rows above and columns left of the output's newest
        # position are inside the map, and whether that position's row or column lies past it
        # (the new word is then one the walk reads ahead, not the output's).
        k = config.depthwise_kernel
        self.lb_depth = config.max_width + k
        self.dw = data.StructLayout({"col": bits_for(self.lb_depth), "rows": bits_for(k),
                                     "cols": bits_for(k), "past_row": 1,
                                     "past_col": 1}) if k else None
        controls = {"dw": self.dw} if k else {}
        # With pixel pairs the second pixel's padding (its word is the next one, `pe.Fetch`)
        # and operands (``x2``, for the upper half of the PE rows); ``merge``: an item of a
        # layer with merged lanes (`LayerDescriptor.merge`) whose upper lanes are the next
        # word's lower ones.
        pair = {"pad2": 1, "merge": 1} if config.pairs else {}
        self.window = data.StructLayout({       # window generator -> fetch
            "act_addr": self.act_addr, "pad": 1, "w_addr": self.w_addr, "first": 1, "last": 1,
            "tag": self.tag, **controls, **pair})
        # fetch -> PE array; a depthwise layer's go through the depthwise window, which gives
        # each PE row operands of its own (``xr``, row-major like the weights)
        self.operands = data.StructLayout({
            "x": data.ArrayLayout(signed(8), pi), "w": data.ArrayLayout(signed(8), po * pi),
            "first": 1, "last": 1, "tag": self.tag, **controls,
            **({"xr": data.ArrayLayout(signed(8), po * pi)} if k else {}),
            **({"x2": data.ArrayLayout(signed(8), pi)} if config.pairs else {})})
        self.sums = data.StructLayout({         # PE array -> requantizer
            "acc": data.ArrayLayout(ACC, po), "tag": self.tag})
        self.pixels = data.StructLayout({       # requantizer -> pool -> writer
            "y": data.ArrayLayout(signed(8), po), "tag": self.tag})
