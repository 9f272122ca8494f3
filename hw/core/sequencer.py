"""The descriptor sequencer: runs every layer of the program after one START.

Per layer: fetch the descriptor words from program memory, derive sizes with one shared
shift-add multiplier (`striate.sw.mapping.derive`) and check them (an illegal descriptor stops the run
with an error code and never starts the datapath), start the window generator (or the add
unit), wait until the last output pixel is written, record the layer's cycles.

The fetch, the sizes and the checks work on the sequencer's own copy of the descriptor (the
*working* set); the datapath reads the ports ``desc``, the base addresses and the derived
sizes (the *active* set). With `AcceleratorConfig.overlap_setup` the active set is a register
copy, loaded when a layer starts, so the next descriptor is fetched, derived and checked while
the current layer runs; without it the ports are the working set and the set-up of a layer
follows the end of the one before.
"""

from __future__ import annotations

import operator
from functools import reduce
from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...sw.mapping import derive, memmap
from ...sw.mapping.descriptor import OP_ADD, OP_CONV, OP_DW, POOL_UPSAMPLE, LayerDescriptor
from .layouts import Layouts, bits_for, descriptor_layout


def base_widths(layouts: Layouts) -> dict:
    """Widths of the channel group counts and word addresses the sequencer hands on: what a
    legal layer needs (a count never exceeds the depth of the memory it indexes). Larger values
    fail their memory's check before they are narrowed (`Sequencer._registered`)."""
    lay = layouts
    return {**derive.count_widths(lay.config),
            "in_base": lay.act_addr, "out_base": lay.act_addr, "in2_base": lay.act_addr,
            "w_base": lay.w_addr,
            "p_base": lay.p_addr}


class Sequencer(wiring.Component):
    def __init__(self, layouts: Layouts):
        self._l = layouts
        cfg = layouts.config
        words = LayerDescriptor.WORDS
        ports = {
            "start": In(1), "layers": In(self.COUNT_BITS),
            "prog_addr": Out(bits_for(cfg.program_depth * words)), "prog_en": Out(1),
            "prog_data": In(32),
            "desc": Out(descriptor_layout()),
            "run": Out(1), "layer_done": In(1), "pe_busy": In(1),
            "busy": Out(1), "done": Out(1), "failed": Out(1), "error": Out(8),
            "layer": Out(self.COUNT_BITS),
            "cycles": Out(32), "busy_cycles": Out(32),
            "lc_addr": Out(bits_for(memmap.stamp_words(cfg))), "lc_data": Out(32),
            "lc_en": Out(1),
        }
        ports.update({name: Out(width) for name, width in base_widths(layouts).items()})
        ports.update({name: Out(width) for name, width in layouts.derived.items()})
        ports.update(self._ports())
        super().__init__(ports)

    COUNT_BITS = 16     # of the LAYERS and LAYER registers

    def _ports(self) -> dict:
        """Ports beyond the classic sequencer's."""
        return {}

    def elaborate(self, platform):
        m = Module()
        words = LayerDescriptor.WORDS
        self._raw = raw = Signal(32 * words)
        self._activate = self._active_set(m)
        m.d.comb += self._work.desc.eq(raw)
        with m.If(self.busy):
            m.d.sync += [self.cycles.eq(self.cycles + 1),
                         self.busy_cycles.eq(self.busy_cycles + self.pe_busy)]
        self._registered(m)
        self._derive_start, self._derive_done = self._multiply(m)
        self._code = self._check(m)
        self._fsm(m)
        return m

    def _active_set(self, m):
        """The working set (``self._work``: the descriptor, base addresses and derived sizes
        the fetch, `_multiply` and the checks use) and the active one (``self._active``: the
        ports the datapath reads). With `AcceleratorConfig.overlap_setup` the active set is a
        register copy of the working one, loaded in a cycle the returned signal is high;
        without it the two are the same signals."""
        names = ["desc", *base_widths(self._l), *derive.results(self._l.config)]
        self._active = SimpleNamespace(**{name: getattr(self, name) for name in names})
        load = Signal(name="activate")
        if not self._l.config.overlap_setup:
            self._work = self._active
            return load
        self._work = SimpleNamespace(**{name: Signal.like(getattr(self, name), name=f"w_{name}")
                                        for name in names[1:]})
        self._work.desc = Signal(descriptor_layout(), name="w_desc")
        with m.If(load):
            m.d.sync += [getattr(self, name).eq(getattr(self._work, name)) for name in names]
        return load

    def _fetch(self, m, slot, j, raw, words, on_done):
        """A FETCH step: reads word ``j`` of slot ``slot`` and shifts the word read the cycle
        before into ``raw`` (word 0 ends lowest); calls ``on_done`` with the last."""
        m.d.comb += [self.prog_addr.eq(slot * LayerDescriptor.WORDS + j), self.prog_en.eq(1)]
        m.d.sync += j.eq(j + 1)
        with m.If(j > 0):
            m.d.sync += raw.eq(Cat(raw[32:], self.prog_data))
        with m.If(j == words):
            on_done()

    def _fsm(self, m):
        """One layer after another: fetch, derive, check, start, and once it is done, the
        next; with `AcceleratorConfig.overlap_setup` the next layer's fetch and sizes run
        while the layer before it does, and its check and start follow that layer's end."""
        cfg, words = self._l.config, LayerDescriptor.WORDS
        overlap = cfg.overlap_setup
        j = Signal(range(words + 2))
        # A finished layer stamps the cycle count (this cycle included); the host takes
        # differences (`memmap.layer_cycles`), so no per-layer counter is needed.
        m.d.comb += [self.lc_addr.eq(self.layer), self.lc_data.eq(self.cycles + 1)]
        code = Signal.like(self.error)
        if overlap:
            slot = Signal.like(self.layer, name="slot")      # the descriptor being set up
            computing = Signal()
            c_done = computing & self.layer_done
            c_free = ~computing | c_done        # the datapath is free from this cycle on
            with m.If(self.run):
                m.d.sync += computing.eq(1)
            with m.Elif(c_done):
                m.d.sync += computing.eq(0)
            m.d.comb += self.lc_en.eq(c_done)
        else:           # set-up follows the layer: the layer running is the one set up
            slot, c_free = self.layer, Const(1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += self._starting() + [j.eq(0)] + [slot.eq(0)] * overlap
                    with m.If((self.layers == 0) | (self.layers > cfg.program_depth)):
                        m.d.sync += self.error.eq(memmap.E_COUNT)
                        m.next = "FAIL"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FETCH"):
                def fetched():
                    m.d.comb += self._derive_start.eq(1)
                    m.next = "DERIVE"
                self._fetch(m, slot, j, self._raw, words, fetched)
            with m.State("DERIVE"):
                with m.If(self._derive_done & c_free):
                    m.next = "CHECK"
                if overlap:
                    with m.Elif(self._derive_done):
                        m.next = "WAIT"
            if overlap:
                with m.State("WAIT"):       # the layer before is still running
                    with m.If(c_free):
                        m.next = "CHECK"
            with m.State("CHECK"):      # the error code is registered: off the start path
                m.d.sync += code.eq(self._code)
                m.d.comb += self._activate.eq(1)
                m.next = "START"
            with m.State("START"):
                with self._refused(m, code, "FAIL"):
                    m.d.comb += self.run.eq(1)
                    if overlap:
                        m.d.sync += [slot.eq(slot + 1), j.eq(0)]
                        with m.If(slot + 1 == self.layers):
                            m.next = "LAST"
                        with m.Else():
                            m.next = "FETCH"
                    else:
                        m.next = "RUN"
                if overlap:
                    m.d.sync += self.layer.eq(slot)     # also the one that failed
            if overlap:
                with m.State("LAST"):
                    with m.If(c_done):
                        m.d.sync += [self.busy.eq(0), self.done.eq(1),
                                     self.layer.eq(self.layer + 1)]
                        m.next = "IDLE"
            else:
                with m.State("RUN"):
                    with m.If(self.layer_done):
                        m.d.comb += self.lc_en.eq(1)
                        m.d.sync += [j.eq(0), self.layer.eq(self.layer + 1)]
                        with m.If(self.layer + 1 == self.layers):
                            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "FETCH"
            with m.State("FAIL"):
                m.d.sync += [self.busy.eq(0), self.failed.eq(1)]
                m.next = "IDLE"

    def _refused(self, m, code, failed: str):
        """In a START state: a failed check (``code`` nonzero) records its code and goes to
        state ``failed``. Returns the ``Else`` block in which the start goes ahead."""
        with m.If(code != 0):
            m.d.sync += self.error.eq(code)
            m.next = failed
        return m.Else()

    def _starting(self) -> list:
        """The statements of a START."""
        return [self.busy.eq(1), self.done.eq(0), self.failed.eq(0), self.error.eq(0),
                self.layer.eq(0), self.cycles.eq(0), self.busy_cycles.eq(0)]

    def _registered(self, m):
        """Channel group counts (registered) and word addresses (shifts of the descriptor's
        byte addresses: wiring), narrowed to `base_widths`. ``self._too_big`` flags, per
        memory check (`derive.ERRORS`), a value whose narrowed bits would lose a one."""
        cfg, d = self._l.config, self._work.desc
        lpi, lpo = cfg.pe_in.bit_length() - 1, cfg.pe_out.bit_length() - 1
        values = {
            "cg_n": ((d.in_c + cfg.pe_in - 1) >> lpi, "act"),
            "og_n": ((d.out_c + cfg.pe_out - 1) >> lpo, "param"),
            "out_cg": ((d.out_c + cfg.pe_in - 1) >> lpi, "act"),
            "in_base": (d.in_addr >> lpi, "act"), "out_base": (d.out_addr >> lpi, "act"),
            **({"in2_base": (d.in2_addr >> lpi, "act")} if cfg.residual_add else {}),
            "w_base": (d.weight_addr >> (lpi + lpo), "weight"),
            "p_base": (d.param_addr >> (cfg.requant_parallel.bit_length() - 1), "param"),
        }
        checked = dict.fromkeys(error for _, error in values.values())
        self._too_big = {error: Signal(name=f"too_big_{error}") for error in checked}
        lost = {error: [] for error in checked}
        for name, (value, error) in values.items():
            port = getattr(self._work, name)
            domain = m.d.sync if name in ("cg_n", "og_n", "out_cg") else m.d.comb
            domain += port.eq(value)
            if len(value) > len(port):
                lost[error].append(value[len(port):] != 0)
        for error, flags in lost.items():
            m.d.sync += self._too_big[error].eq(reduce(operator.or_, flags, Const(0)))

    def _multiply(self, m):
        """Run `derive.program` on one shift-add unit. Each term loads ``+-a`` and ``b`` (clearing
        the accumulator at a step's first term), then adds ``a << i`` for each set bit ``i`` of
        ``b`` until no bit is left; a step's last term stores the result or records a failed
        check. A result that does not fit its register (`Layouts.derived`) sets ``saturated``. Returns
        (start, done) strobes; `_programs` may add programs, each started by a strobe of
        ``self._starts``."""
        cfg = self._l.config
        programs = self._programs()
        self._starts = starts = [Signal(name=f"derive_start{k}") for k in range(len(programs))]
        start, done = starts[0], Signal()
        work = self._work
        sources = {name: getattr(work.desc, name)
                   for name, _, _ in LayerDescriptor.fields_layout()}
        sources.update({name: getattr(work, name) for name in base_widths(self._l)})
        sources.update({name: getattr(work, name) for name in derive.results(cfg)})
        sources.update({name: Const(value) for name, value in derive.depths(cfg).items()})
        if cfg.depthwise_kernel:        # (else `derive.program` reads the fields themselves)
            d = work.desc
            depthwise = d.op == OP_DW       # weights: a word per channel group, once
            up = depthwise & (d.pool == POOL_UPSAMPLE)  # `derive.group_counts`
            sources.update(wk_h=Mux(depthwise, 1, d.k_h), wk_w=Mux(depthwise, 1, d.k_w),
                           w_og=Mux(depthwise, 1, work.og_n),
                           fit_h=Mux(up, d.out_h, d.in_h), fit_w=Mux(up, d.out_w, d.in_w),
                           fit_pk_h=Mux(up, 1, d.pool_k_h), fit_pk_w=Mux(up, 1, d.pool_k_w))
        if not cfg.pool_padding:    # nonzero pool pads fail the limit check
            sources.update(pool_pad_h=Const(0), pool_pad_w=Const(0))
        if cfg.pairs:       # columns written: a pair layer's out_w counts pairs
            d = work.desc
            sources.update(wr_w=Mux(d.pair & (d.pool == 0), Cat(Const(0, 1), d.out_w),
                                    d.out_w))
            # merged lanes: `derive.MERGE_PRELUDE` and the kernel terms it feeds
            wk_w = sources["wk_w"] if cfg.depthwise_kernel else d.k_w
            sources.update(kw_skip=Mux(d.merge, d.k_w[1:], 0),
                           kk_w=Mux(d.merge, work.kw_items, wk_w),
                           kk_g=Mux(d.merge, 1, work.cg_n))
        sources.update(self._extra_sources())

        def source(name):
            return Const(name) if isinstance(name, int) else sources[name]
        # The term table as small ROMs indexed by the term number: which source is a, which
        # is b (indices into the distinct sources), negate, first and last term of a step.
        terms, firsts, lasts = [], [], []
        for steps in programs:
            firsts.append(len(terms))
            terms += [(sign, a, b, t == 0, t == len(step.terms) - 1, step)
                      for step in steps for t, (sign, a, b) in enumerate(step.terms)]
            lasts.append(len(terms) - 1)
        a_names = sorted({a for _, a, _, _, _, _ in terms}, key=str)
        b_names = sorted({b for _, _, b, _, _, _ in terms}, key=str)
        a_srcs, b_srcs = [source(n) for n in a_names], [source(n) for n in b_names]

        def rom(values):
            return Array(Const(v, range(max(2, max(values) + 1))) for v in values)
        index = Signal(range(len(terms)))
        roms = [rom([a_names.index(a) for _, a, _, _, _, _ in terms]),
                rom([b_names.index(b) for _, _, b, _, _, _ in terms]),
                rom([int(sign < 0) for sign, *_ in terms]),
                rom([int(f) for _, _, _, f, _, _ in terms])]
        # The term's codes are registered as its number is (looked up for the number it
        # gets), which keeps the table off the path from the number through the source
        # multiplexers into ``a``.
        codes = [Signal.like(r[0], name=f"code{k}") for k, r in enumerate(roms)]
        a_code, b_code, negative, first = codes

        def number(i):
            return [index.eq(i)] + [code.eq(r[i]) for code, r in zip(codes, roms)]
        a_bits = max(len(a) for a in a_srcs)
        b_bits = max(len(b) for b in b_srcs)
        loading, active = Signal(), Signal()
        # ``a`` holds the term's signed addend (negated at load for a negative term), so the
        # loop is one adder that maps onto carry chains.
        a, acc = Signal(signed(a_bits + b_bits + 1)), Signal(signed(a_bits + b_bits + 3))
        b = Signal(b_bits)
        self._saturated = saturated = Signal()
        errors = dict.fromkeys(step.error for steps in programs for step in steps
                               if isinstance(step, derive.Check))
        self._failed = {error: Signal(name=f"failed_{error}") for error in errors}
        total = acc + Mux(b[0], a, 0)
        last_bit = b[1:] == 0
        with m.If(reduce(operator.or_, starts)):
            m.d.sync += [loading.eq(1), active.eq(1), saturated.eq(0)]
            m.d.sync += [flag.eq(0) for flag in self._failed.values()]
            for k, strobe in enumerate(starts):
                with m.If(strobe):
                    m.d.sync += number(self._first_term(firsts[k]) if k == 0 else firsts[k])
        with m.Elif(loading):
            value = Array(a_srcs)[a_code]
            m.d.sync += [loading.eq(0), a.eq(Mux(negative, -value, value)),
                         b.eq(Array(b_srcs)[b_code])]
            with m.If(first):
                m.d.sync += acc.eq(0)
        with m.Elif(active):
            m.d.sync += acc.eq(total)
            with m.If(last_bit):
                for i, (_, _, _, _, last, step) in enumerate(terms):
                    if not last:
                        continue
                    with m.If(index == i):
                        if isinstance(step, (derive.Size, derive.Sum)):
                            width = self._l.derived[step.dest]
                            m.d.sync += [sources[step.dest].eq(total),
                                         # a Size's total is a product, never negative
                                         saturated.eq(saturated | (total[width:] != 0))]
                        else:
                            # sign tests: no comparator chain
                            fails = ~total[-1] & (Const(1) if step.strict else total.any())
                            flag = self._failed[step.error]
                            m.d.sync += flag.eq(flag | fails)
                # `derive.PSUM_CHECKS` end the first program, run only for a descriptor
                # that uses partial sums
                ends = [index == last for last in lasts]
                if cfg.psum_entries:
                    d = work.desc
                    ends.append((index == lasts[0] - len(self._psum_terms()))
                                & ~(d.psum_in | d.psum_out))
                with m.If(reduce(operator.or_, ends)):
                    m.d.comb += done.eq(1)
                    m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += number(index + 1) + [loading.eq(1)]
            with m.Else():
                m.d.sync += [a.eq(a << 1), b.eq(b >> 1)]
        return start, done

    def _first_term(self, first):
        """The term the layer program starts at: with pixel pairs, after `derive.MERGE_PRELUDE`
        unless the descriptor has ``merge``. The strobe comes as its last word arrives from
        the program memory (`_fetch`), so the bit is taken from there."""
        if not self._l.config.pairs:
            return first
        words = LayerDescriptor.WORDS
        offset = descriptor_layout()["merge"].offset - 32 * (words - 1)
        assert offset >= 0, "the merge bit must lie in the descriptor's last word"
        skip = sum(len(step.terms) for step in derive.MERGE_PRELUDE)
        return Mux(self.prog_data[offset], first, first + skip)

    @staticmethod
    def _psum_terms() -> list:
        return [term for step in derive.PSUM_CHECKS for term in step.terms]

    def _programs(self) -> list:
        """The step programs the shift-add unit runs: `derive.program` (started by
        ``_derive_start``)."""
        return [derive.program(self._l.config)]

    def _extra_sources(self) -> dict:
        """Term sources beyond the descriptor, base addresses, results and depths."""
        return {}

    def _check(self, m):
        """The error code of the current descriptor (0 when legal), from its fields and the
        checks `_multiply` ran. The checks of the fields alone are registered: they settle
        while `_multiply` runs, which keeps them off the path from CHECK into the datapath."""
        cfg, d = self._l.config, self._work.desc
        zero = [d.in_c, d.in_h, d.in_w, d.out_c, d.conv_h, d.conv_w, d.out_h, d.out_w, d.k_h,
                d.k_w, d.stride_h, d.stride_w, d.pool_k_h, d.pool_k_w, d.pool_stride_h,
                d.pool_stride_w]

        def registered(cond, name):
            flag = Signal(name=name)
            m.d.sync += flag.eq(cond)
            return flag
        pool_pads_fit = registered((2 * d.pool_pad_h <= d.pool_k_h)
                                   & (2 * d.pool_pad_w <= d.pool_k_w), "pool_pads_fit")
        shape_ok = ~self._failed["shape"] & pool_pads_fit
        in2 = d.in2_addr if cfg.residual_add else Const(0)     # read only by an add
        misaligned = ((d.in_addr & (cfg.pe_in - 1)) | (d.out_addr & (cfg.pe_in - 1))
                      | (in2 & (cfg.pe_in - 1))
                      | (d.weight_addr & (cfg.pe_in * cfg.pe_out - 1))
                      | (d.param_addr & (cfg.pe_out - 1))) != 0
        no_avg = Const(not cfg.avg_pool) & (d.pool == 2)
        is_add = d.op == OP_ADD
        known_op = (d.op == OP_CONV) | (Const(cfg.residual_add) & is_add) \
            | (Const(bool(cfg.depthwise_kernel)) & (d.op == OP_DW))
        # A depthwise layer: one channel per output channel, no pooling, padding below the
        # kernel (`striate.sw.mapping.depthwise`), a kernel within the window.
        dw = Const(bool(cfg.depthwise_kernel)) & (d.op == OP_DW)
        # Upsampling (pool code 3 on a depthwise layer): a 1x1 copy, its output map within the
        # walk's counters.
        up = dw & (d.pool == POOL_UPSAMPLE)
        dw_shape = registered(dw & ((d.in_c != d.out_c) | ((d.pool != 0) & ~up)
                                    | (d.pad_h >= d.k_h) | (d.pad_w >= d.k_w)
                                    | (up & ((d.k_h != 1) | (d.k_w != 1) | (d.stride_h != 1)
                                             | (d.stride_w != 1)))), "dw_shape")
        dw_limit = dw & ((d.k_h > cfg.depthwise_kernel) | (d.k_w > cfg.depthwise_kernel)
                         | (up & ((d.out_w > cfg.max_width) | (d.out_h > cfg.max_height))))
        # An add reads no weights or parameters: their checks do not apply to it.
        convolving = Signal(name="convolving")
        m.d.sync += convolving.eq(~is_add)
        pool_pad = Const(not cfg.pool_padding) & ((d.pool_pad_h != 0) | (d.pool_pad_w != 0))
        # partial sums: convolutions on the convolution datapath only, with the memory
        bad_psum = (d.psum_in | d.psum_out) & (Const(not cfg.psum_entries) | (d.op != OP_CONV))
        # pixel pairs: convolutions, with the hardware for them (`AcceleratorConfig.pairs`),
        # of at most pe_out / 2 channels at column stride 1, walked as windows of one column at
        # column stride 2 over an even conv_w: unpooled (out_w pairs) or max pooled (a pair a
        # window's two columns; not with the serial requantizer)
        bad_pair = d.pair & (Const(not cfg.pairs) | (d.op != OP_CONV))
        # merged lanes: convolutions not in pairs, with the hardware for pairs
        bad_merge = d.merge & (Const(not cfg.pairs) | (d.op != OP_CONV) | d.pair)
        pooled_pair = (d.pool == 1) & Const(not cfg.serial_scale_bits)
        pair_shape = Const(0) if not cfg.pairs else registered(d.pair & (
            (d.out_c > cfg.pe_out // 2) | (d.stride_w != 1) | (d.pool_k_w != 1)
            | (d.pool_stride_w != 2) | (d.conv_w != Cat(Const(0, 1), d.out_w))
            | ~(((d.pool == 0) & (d.pool_k_h == 1) & (d.pool_stride_h == 1)) | pooled_pair)),
            "pair_shape")
        checks = [  # first failing check wins
            (registered(~known_op | ((d.pool > 2) & ~up) | no_avg | (is_add & (d.table != 0))
                        | bad_psum | bad_pair | bad_merge, "bad_op"), memmap.E_OP),
            (registered(reduce(operator.or_, [z == 0 for z in zero]), "zero"), memmap.E_ZERO),
            (registered((d.in_w > cfg.max_width) | (d.in_h > cfg.max_height)
                        | (d.stride_h > cfg.max_stride)
                        | (d.stride_w > cfg.max_stride) | (d.pool_stride_h > cfg.max_stride)
                        | (d.pool_stride_w > cfg.max_stride) | pool_pad
                        | (d.table > cfg.activation_tables) | dw_limit, "over_limit"),
             memmap.E_LIMIT),
            (~shape_ok | dw_shape | pair_shape, memmap.E_SHAPE),
            (registered(misaligned, "misaligned"), memmap.E_ALIGN),
            (self._failed["act"] | self._too_big["act"], memmap.E_ACT),
            ((self._failed["weight"] | self._too_big["weight"]) & convolving, memmap.E_WEIGHT),
            ((self._failed["param"] | self._too_big["param"]) & convolving, memmap.E_PARAM),
            (self._saturated, memmap.E_LIMIT),
        ]
        if cfg.psum_entries:
            checks.append((self._failed["psum"], memmap.E_PSUM))
        code = 0
        for cond, value in reversed(checks):
            code = Mux(cond, value, code)
        return code

