"""The descriptor sequencer: runs every layer of the program after one START.

Per layer: fetch the descriptor words from program memory, derive sizes and check them
(an illegal descriptor stops the run with an error code and never starts the datapath), start
the window generator, wait until the last output pixel is written, record the layer's cycles.
"""

from __future__ import annotations

import operator
from functools import reduce

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw import memmap
from ..sw.descriptor import OP_CONV, LayerDescriptor
from .layouts import Layouts, bits_for, descriptor_layout

DERIVED = {"cg_n": 16, "og_n": 16, "hw_in": 20, "kk": 26, "in_base": 24, "out_base": 24,
           "w_base": 26, "p_base": 16}


class Sequencer(wiring.Component):
    def __init__(self, layouts: Layouts):
        self._l = layouts
        cfg = layouts.config
        words = LayerDescriptor.WORDS
        ports = {
            "start": In(1), "layers": In(16),
            "prog_addr": Out(bits_for(cfg.program_depth * words)), "prog_en": Out(1),
            "prog_data": In(32),
            "desc": Out(descriptor_layout()),
            "run": Out(1), "layer_done": In(1), "pe_busy": In(1),
            "busy": Out(1), "done": Out(1), "failed": Out(1), "error": Out(8), "layer": Out(16),
            "cycles": Out(32), "busy_cycles": Out(32),
            "lc_addr": Out(bits_for(cfg.program_depth)), "lc_data": Out(32), "lc_en": Out(1),
        }
        ports.update({name: Out(width) for name, width in DERIVED.items()})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg, words = self._l.config, LayerDescriptor.WORDS
        raw = Signal(32 * words)
        m.d.comb += self.desc.eq(raw)
        j = Signal(range(words + 2))
        layer_cycles = Signal(32)
        m.d.comb += [self.lc_addr.eq(self.layer), self.lc_data.eq(layer_cycles + 1)]  # + this cycle
        with m.If(self.busy):
            m.d.sync += [self.cycles.eq(self.cycles + 1), layer_cycles.eq(layer_cycles + 1),
                         self.busy_cycles.eq(self.busy_cycles + self.pe_busy)]
        sizes = self._derive(m)
        error = self._check(m, sizes)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), self.done.eq(0), self.failed.eq(0),
                                 self.error.eq(0), self.layer.eq(0), self.cycles.eq(0),
                                 self.busy_cycles.eq(0), layer_cycles.eq(0), j.eq(0)]
                    with m.If((self.layers == 0) | (self.layers > cfg.program_depth)):
                        m.d.sync += self.error.eq(memmap.E_COUNT)
                        m.next = "FAIL"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [self.prog_addr.eq(self.layer * words + j), self.prog_en.eq(1)]
                m.d.sync += j.eq(j + 1)
                with m.If(j > 0):
                    m.d.sync += raw.eq(Cat(raw[32:], self.prog_data))   # word 0 ends lowest
                with m.If(j == words):
                    m.next = "DERIVE"
            with m.State("DERIVE"):       # sizes need two register stages
                m.next = "DERIVE2"
            with m.State("DERIVE2"):
                m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(error != 0):
                    m.d.sync += self.error.eq(error)
                    m.next = "FAIL"
                with m.Else():
                    m.d.comb += self.run.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.layer_done):
                    m.d.comb += self.lc_en.eq(1)
                    m.d.sync += [layer_cycles.eq(0), j.eq(0), self.layer.eq(self.layer + 1)]
                    with m.If(self.layer + 1 == self.layers):
                        m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FAIL"):
                m.d.sync += [self.busy.eq(0), self.failed.eq(1)]
                m.next = "IDLE"
        return m

    def _derive(self, m):
        """Register sizes derived from the descriptor (valid from the CHECK state on)."""
        cfg, d = self._l.config, self.desc
        lpi, lpo = cfg.pe_in.bit_length() - 1, cfg.pe_out.bit_length() - 1
        sizes = {name: Signal(40, name=name) for name in ("in_words", "out_words", "w_words")}
        out_cg = (d.out_c + cfg.pe_in - 1) >> lpi
        m.d.sync += [
            self.cg_n.eq((d.in_c + cfg.pe_in - 1) >> lpi),
            self.og_n.eq((d.out_c + cfg.pe_out - 1) >> lpo),
            self.hw_in.eq(d.in_h * d.in_w),
            self.kk.eq(d.k_h * d.k_w * ((d.in_c + cfg.pe_in - 1) >> lpi)),
            self.in_base.eq(d.in_addr >> lpi), self.out_base.eq(d.out_addr >> lpi),
            self.w_base.eq(d.weight_addr >> (lpi + lpo)),
            self.p_base.eq(d.param_addr >> (cfg.requant_parallel.bit_length() - 1)),
            sizes["in_words"].eq(self.cg_n * self.hw_in),
            sizes["out_words"].eq(out_cg * d.out_h * d.out_w),
            sizes["w_words"].eq(self.og_n * self.kk),
        ]
        return sizes

    def _check(self, m, sizes):
        """The error code of the current descriptor (0 when legal), from registered sizes."""
        cfg, d = self._l.config, self.desc
        mems = memmap.memories(cfg)
        bank, wdepth = mems[memmap.BANK0].depth, mems[memmap.WEIGHTS].depth
        pdepth = mems[memmap.PARAMS].depth
        zero = [d.in_c, d.in_h, d.in_w, d.out_c, d.conv_h, d.conv_w, d.out_h, d.out_w, d.k_h,
                d.k_w, d.stride_h, d.stride_w, d.pool_k_h, d.pool_k_w, d.pool_stride_h,
                d.pool_stride_w]

        def fits(n, k, s, p, size):     # n outputs of a k-window with stride s over size + 2p
            return ((n - 1) * s + k <= size + 2 * p) & (size + 2 * p < n * s + k)
        shape_ok = (fits(d.conv_h, d.k_h, d.stride_h, d.pad_h, d.in_h)
                    & fits(d.conv_w, d.k_w, d.stride_w, d.pad_w, d.in_w)
                    & fits(d.out_h, d.pool_k_h, d.pool_stride_h, d.pool_pad_h, d.conv_h)
                    & fits(d.out_w, d.pool_k_w, d.pool_stride_w, d.pool_pad_w, d.conv_w)
                    & (2 * d.pool_pad_h <= d.pool_k_h) & (2 * d.pool_pad_w <= d.pool_k_w))
        misaligned = ((d.in_addr & (cfg.pe_in - 1)) | (d.out_addr & (cfg.pe_in - 1))
                      | (d.weight_addr & (cfg.pe_in * cfg.pe_out - 1))
                      | (d.param_addr & (cfg.pe_out - 1))) != 0
        checks = [  # first failing check wins
            ((d.op != OP_CONV) | (d.pool > 2), memmap.E_OP),
            (reduce(operator.or_, [z == 0 for z in zero]), memmap.E_ZERO),
            ((d.in_w > cfg.max_width) | (d.stride_h > cfg.max_stride)
             | (d.stride_w > cfg.max_stride), memmap.E_LIMIT),
            (~shape_ok, memmap.E_SHAPE),
            (misaligned, memmap.E_ALIGN),
            ((self.in_base + sizes["in_words"] > bank)
             | (self.out_base + sizes["out_words"] > bank), memmap.E_ACT),
            (self.w_base + sizes["w_words"] > wdepth, memmap.E_WEIGHT),
            (self.p_base + self.og_n * (cfg.pe_out // cfg.requant_parallel) > pdepth,
             memmap.E_PARAM),
        ]
        code = 0
        for cond, value in reversed(checks):
            code = Mux(cond, value, code)
        return code

