"""The sequencer of a configuration with external memory: layers and transfers run side by side.

The program holds layer descriptors and transfers (`MoveDescriptor`, op `OP_MOVE`) in one
sequence, issued in order to two engines: the datapath runs one layer at a time, the DMA
engine (`striate.hw.core.dma`) one transfer at a time. A descriptor issues once its engine is
idle and, with ``wait``, the other engine too; the sequencer then goes on to the next
descriptor without waiting for it to finish, so a transfer that follows a layer runs while
the layer does (double buffering is the compiler's order of descriptors and buffers).

Before a descriptor issues, the sequencer checks it as the classic sequencer does, and a
transfer also for its target memory, alignment, bounds (`striate.sw.mapping.derive
.MOVE_PROGRAM`) and for touching memory that the running layer uses (the banks of the
activation memory that hold the layer's inputs and output, its weight and parameter rows,
the table memory if it looks values up); a layer is checked the same way against a running
transfer. A failed check stops the run with its error code once both engines are idle,
having started nothing.

The program memory is a ring: descriptor ``i`` is read from slot ``i % program_depth``, so
a program longer than the memory refills slots that have run with transfers into the
program memory; the sequencer waits for such a transfer to finish before it reads on.

A descriptor with ``stamp`` set takes the next LAYER_CYCLES word when it issues; the cycle
counter is written there when it finishes (`striate.sw.mapping.memmap`).
"""

from __future__ import annotations

import operator
from functools import reduce

from amaranth.hdl import Const, Mux, Signal
from amaranth.lib.wiring import In, Out

from ...sw.mapping import derive, memmap
from ...sw.mapping.descriptor import OP_ADD, OP_MOVE, LayerDescriptor, MoveDescriptor
from ...sw.mapping.memmap import memories
from .layouts import bits_for, descriptor_layout
from .sequencer import Sequencer

MOVE_WORDS = -(-MoveDescriptor.total_bits() // 32)
ROW_WORD_TARGETS = (memmap.PROGRAM, memmap.TABLES)  # 32-bit rows


def log2(n: int) -> int:
    return n.bit_length() - 1


class TwoEngineSequencer(Sequencer):
    COUNT_BITS = 32

    def _ports(self) -> dict:
        cfg = self._l.config
        return {"running": Out(self.COUNT_BITS),
                "move": Out(descriptor_layout(MoveDescriptor)), "m_start": Out(1),
                "dma_busy": In(1), "dma_error": In(1), "owner": Out(cfg.act_banks),
                "m_target": Out(3), "narrow": Out(1)}

    def _programs(self) -> list:
        return [derive.program(self._l.config), derive.MOVE_PROGRAM]

    def _extra_sources(self) -> dict:
        mv = self.move
        sizes = derive.local_bytes(self._l.config)
        local = Const(0, 27)
        for code, size in sizes.items():
            local = Mux(mv.target == code, size, local)
        return {**{name: getattr(mv, name) for name in
                   ("local_stride", "count", "length", "local_addr", "ext_stride", "ext_addr")},
                "local_bytes": local}

    def _fsm(self, m):
        cfg, words = self._l.config, LayerDescriptor.WORDS
        overlap = cfg.overlap_setup
        j = Signal(range(words + 2))
        slot = Signal(range(cfg.program_depth))
        mraw = Signal(32 * MOVE_WORDS)
        m.d.comb += self.move.eq(mraw)
        code = Signal.like(self.error)
        peek_wait = Signal()
        computing, moving = Signal(), Signal()
        c_done = computing & self.layer_done
        m_done = moving & ~self.dma_busy
        with m.If(self.run):
            m.d.sync += computing.eq(1)
        with m.Elif(c_done):
            m.d.sync += computing.eq(0)
        with m.If(self.m_start):
            m.d.sync += moving.eq(1)
        with m.Elif(m_done):
            m.d.sync += moving.eq(0)
        running = self._running_move(m, moving)
        stamp = self._stamps(m, c_done, m_done)

        def next_slot():
            return slot.eq(Mux(slot == cfg.program_depth - 1, 0, slot + 1))
        # An engine is free from the cycle its descriptor finishes on.
        c_free, m_free = ~computing | c_done, ~moving | m_done
        idle = c_free & m_free
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += self._starting() + [j.eq(0), slot.eq(0), stamp.eq(0)]
                    with m.If(self.layers == 0):
                        m.d.sync += self.error.eq(memmap.E_COUNT)
                        m.next = "FAIL"
                    with m.Else():
                        m.next = "PEEK"
            with m.State("PEEK"):
                m.d.comb += [self.prog_addr.eq(slot * words), self.prog_en.eq(1)]
                m.next = "OP"
            with m.State("OP"):
                m.d.sync += [j.eq(0), peek_wait.eq(self.prog_data[2])]
                with m.If(self.prog_data[:2] == OP_MOVE):
                    m.next = "MFETCH"
                with m.Else():
                    m.next = "FETCH" if overlap else "CWAIT"
            with m.State("MFETCH"):
                def fetched_move():
                    m.d.comb += self._starts[1].eq(1)
                    m.next = "MDERIVE"
                self._fetch(m, slot, j, mraw, MOVE_WORDS, fetched_move)
            with m.State("MDERIVE"):
                with m.If(self._derive_done):
                    m.next = "MWAIT"
            with m.State("MWAIT"):
                with m.If(m_free & (~self.move.wait | c_free)):
                    m.next = "MCHECK"
            with m.State("MCHECK"):
                m.d.sync += code.eq(self._move_code(m, computing))
                m.next = "MSTART"
            with m.State("MSTART"):
                with self._refused(m, code, "STOP"):
                    m.d.comb += self.m_start.eq(1)
                    m.d.sync += running(self.move.stamp, stamp)
                    with m.If(self.move.target == memmap.PROGRAM):
                        m.next = "MPROGRAM"
                    with m.Else():
                        m.next = "NEXT"
            with m.State("MPROGRAM"):   # the slots ahead are being refilled
                with m.If(m_free):
                    m.next = "NEXT"
            # With `AcceleratorConfig.overlap_setup` a layer's descriptor is fetched and
            # derived before it waits for its engine (and with ``wait`` the other one),
            # without it after.
            free = c_free & (~peek_wait | m_free)
            with m.State("CWAIT"):
                with m.If(free):
                    m.next = "CHECK" if overlap else "FETCH"
            with m.State("FETCH"):
                def fetched():
                    m.d.comb += self._derive_start.eq(1)
                    m.next = "DERIVE"
                self._fetch(m, slot, j, self._raw, words, fetched)
            with m.State("DERIVE"):
                with m.If(self._derive_done & (free if overlap else 1)):
                    m.next = "CHECK"
                with m.Elif(self._derive_done):
                    m.next = "CWAIT"
            with m.State("CHECK"):      # the engines it waited for are free
                busy = moving & self._overlaps(self._work, *self._running)
                m.d.sync += code.eq(Mux(self._code != 0, self._code,
                                        Mux(busy, memmap.E_BUSY, 0)))
                m.d.comb += self._activate.eq(1)
                m.next = "START"
            with m.State("START"):
                with self._refused(m, code, "STOP"):
                    m.d.comb += self.run.eq(1)
                    m.d.sync += self._c_stamp(self.desc.stamp, stamp) + [
                        self.running.eq(self.layer)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.sync += [self.layer.eq(self.layer + 1), next_slot(), j.eq(0)]
                with m.If(self.dma_error):
                    m.d.sync += self.error.eq(memmap.E_BUS)
                    m.next = "STOP"
                with m.Elif(self.layer + 1 == self.layers):
                    m.next = "DRAIN"
                with m.Else():
                    m.next = "PEEK"
            with m.State("DRAIN"):    # (a transfer's stamp may be written the cycle after)
                with m.If(idle):
                    with m.If(self.dma_error):
                        m.d.sync += self.error.eq(memmap.E_BUS)
                        m.next = "FAIL"
                    with m.Else():
                        m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
            with m.State("STOP"):       # a check failed: let the engines finish first
                with m.If(idle):
                    m.next = "FAIL"
            with m.State("FAIL"):
                m.d.sync += [self.busy.eq(0), self.failed.eq(1)]
                m.next = "IDLE"

    def _running_move(self, m, moving):
        """Registers of the transfer that runs: its target and first and last byte (for the
        checks of layers that start while it runs), the activation banks it owns. Returns a
        function giving the statements that record the transfer starting (with its stamp
        flag and the stamp counter)."""
        cfg = self._l.config
        target = Signal(3, name="r_target")
        first = Signal(MoveDescriptor.bits("local_addr"), name="r_first")
        last = Signal(MoveDescriptor.bits("local_addr") + 1, name="r_last")
        self._running = (target, first, last)
        lo, hi = self._banks(first), self._banks(last)
        m.d.comb += [self.m_target.eq(target),
                     self.narrow.eq(reduce(operator.or_, [target == t for t in ROW_WORD_TARGETS])),
                     self.owner.eq(Const(0, cfg.act_banks))]
        for b in range(cfg.act_banks):
            inside = (lo <= b) & (b <= hi) if b else lo == 0    # (0 <= hi always holds)
            m.d.comb += self.owner[b].eq(moving & (target == memmap.ACT) & inside)
        self._m_stamp = Signal(name="m_stamp")
        self._m_index = Signal.like(self.lc_addr, name="m_index")

        def start(flag, counter):
            mv = self.move
            return [target.eq(mv.target), first.eq(mv.local_addr),
                    last.eq(self._work.m_end - 1),
                    self._m_stamp.eq(flag), self._m_index.eq(counter),
                    counter.eq(counter + flag)]
        return start

    def _c_stamp(self, flag, counter):
        return [self._cs.eq(flag), self._ci.eq(counter), counter.eq(counter + flag)]

    def _stamps(self, m, c_done, m_done):
        """The LAYER_CYCLES writes: a layer's when it finishes, a transfer's then too or,
        if a layer's takes the write port that cycle, the cycle after. Returns the stamp
        counter."""
        counter = Signal(bits_for(memmap.stamp_words(self._l.config)) + 1, name="stamp_counter")
        self._cs, self._ci = Signal(name="c_stamp"), Signal.like(self.lc_addr, name="c_index")
        pending = Signal(name="stamp_pending")
        p_index, p_value = Signal.like(self.lc_addr), Signal.like(self.lc_data)
        with m.If(c_done & self._cs):
            m.d.comb += [self.lc_addr.eq(self._ci), self.lc_data.eq(self.cycles + 1),
                         self.lc_en.eq(1)]
        with m.Elif(pending):
            m.d.comb += [self.lc_addr.eq(p_index), self.lc_data.eq(p_value), self.lc_en.eq(1)]
            m.d.sync += pending.eq(0)
        with m.If(m_done & self._m_stamp):
            m.d.sync += [pending.eq(1), p_index.eq(self._m_index), p_value.eq(self.cycles + 1)]
        return counter

    def _banks(self, byte):
        """The activation bank that holds byte ``byte`` of the pool."""
        cfg = self._l.config
        bank_bytes = cfg.act_bytes // cfg.act_banks     # a bank's rows of both parities
        return byte >> log2(bank_bytes)

    def _overlaps(self, layer, target, first, last):
        """Whether on-chip bytes ``first`` to ``last`` of memory ``target`` hold something
        ``layer`` uses: the working set (`Sequencer`: a layer being checked) or the active
        one (the layer the datapath runs or ran last)."""
        cfg, d = self._l.config, layer.desc
        mems = memories(cfg)
        conv = d.op != OP_ADD

        def meet(lo, hi, a, b):
            return (lo <= b) & (a <= hi)
        lpi = log2(cfg.pe_in)
        word_bank = log2(cfg.act_bytes // cfg.act_banks) - lpi     # pool words -> bank
        lo, hi = first >> (lpi + word_bank), last >> (lpi + word_bank)

        def act(base, count):
            return meet(lo, hi, base >> word_bank, (base + count - 1) >> word_bank)
        v = layer
        uses_act = act(v.in_base, v.in_words) | act(v.out_base, v.out_words)
        if cfg.residual_add:
            uses_act |= (d.op == OP_ADD) & act(v.in2_base, v.in_words)
        lw = log2(mems[memmap.WEIGHTS].row_bytes)
        lp = log2(mems[memmap.PARAMS].row_bytes)
        uses_w = conv & meet(first >> lw, last >> lw, v.w_base, v.w_base + v.w_rows - 1)
        uses_p = conv & meet(first >> lp, last >> lp, v.p_base, v.p_base + v.p_rows - 1)
        uses_t = d.table != 0 if cfg.activation_tables else Const(0)
        return Mux(target == memmap.ACT, uses_act,
                   Mux(target == memmap.WEIGHTS, uses_w,
                       Mux(target == memmap.PARAMS, uses_p,
                           Mux(target == memmap.TABLES, uses_t, 0))))

    def _move_code(self, m, computing):
        """The error code of the transfer in ``move`` (0 when it may start)."""
        cfg, mv = self._l.config, self.move
        known = reduce(operator.or_, [mv.target == code for code in derive.move_regions(cfg)])
        mask = Mux(mv.target == memmap.ACT, 3, 7)
        misaligned = ((mv.ext_addr | mv.length | mv.ext_stride | mv.local_addr
                       | mv.local_stride) & mask) != 0
        checks = [
            (~known | (mv.store & (mv.target != memmap.ACT)), memmap.E_OP),
            ((mv.length == 0) | (mv.count == 0), memmap.E_ZERO),
            (misaligned, memmap.E_ALIGN),
            (self._failed["local"] | self._saturated, memmap.E_LOCAL),
            (self._failed["ext"], memmap.E_EXT),
            (computing & self._overlaps(self._active, mv.target, mv.local_addr,
                                        self._work.m_end - 1),
             memmap.E_BUSY),
        ]
        code = 0
        for cond, value in reversed(checks):
            code = Mux(cond, value, code)
        return code
