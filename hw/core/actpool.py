"""The activation memory: one pool of words (``pe_in`` channels each) in ``2 * act_banks`` RAMs.

Pool word ``w`` lives in RAM ``(w & 1, bank)`` at row ``(w >> 1) % bank_rows``, ``bank = (w >>
1) // bank_rows``: even and odd words in RAMs of their own (the convolution datapath reads one
word a cycle, the add path a word of each parity), and each parity split into
``act_banks`` banks of consecutive rows, each with ports of its own.

Two kinds of agent use the ports:

- the layer running (``c_*``, per parity ``k``: a read of row ``c_raddr[k]``, its data in
  ``c_rdata[k]`` a cycle later, and a write of row ``c_waddr[k]`` with byte enables);
- a word port (``p_*``) in units of 32-bit words, two consecutive words ``p_waddr`` and
  ``p_waddr + 1`` a cycle (enables ``p_wen``), or read (``p_raddr``, data a cycle later in
  ``p_rdata``). The host bus uses it while the accelerator is idle (one word), the DMA
  engine while a transfer runs.

A bank belongs to the word port while ``owner`` has its bit set, else to the layer. The
sequencer never lets a layer and a transfer share a bank, so no access is lost; a layer's
reads in a bank it does not own return whatever the port read (its fetch reads every cycle,
valid or not). Read data holds while no read of its parity is enabled.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import Layouts, bits_for


class ActPool(wiring.Component):
    def __init__(self, layouts: Layouts, word_bits: int):
        cfg = layouts.config
        self._l = layouts
        row = layouts.act_addr - 1
        width = 8 * cfg.pe_in
        super().__init__({
            "c_raddr": In(row).array(2), "c_ren": In(1).array(2), "c_rdata": Out(width).array(2),
            "c_waddr": In(row).array(2), "c_wdata": In(width).array(2),
            "c_wen": In(cfg.pe_in).array(2),
            "p_waddr": In(word_bits), "p_wdata": In(64), "p_wen": In(2),
            "p_raddr": In(word_bits), "p_ren": In(1), "p_rdata": Out(64),
            "owner": In(cfg.act_banks),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._l.config
        banks, width = cfg.act_banks, 8 * cfg.pe_in
        rows = cfg.act_bytes // cfg.pe_in // 2 // banks
        row_bits, bank_bits = bits_for(rows), bits_for(banks) if banks > 1 else 0
        # 32-bit words per pool word (a pool word under 32 bits takes a word of its own,
        # as on the host bus)
        q = max(1, cfg.pe_in // 4)
        lq = q.bit_length() - 1
        wbits = min(32, width)

        def bank_of(row):
            return row[row_bits:row_bits + bank_bits] if bank_bits else Const(0, 1)

        def place(addr):
            """Pool word, its parity, row and the 32-bit word within it of word ``addr``."""
            word = addr >> lq
            return word[0], word[1:], (addr[:lq] if lq else Const(0, 1))
        # The word port's accesses, per parity: row, data and byte enables of the write; row
        # and enable of the read; which 32-bit word of the row each of the pair reads.
        p_w = {k: (Signal(len(self.c_waddr[0]), name=f"pw_row{k}"), Signal(width, name=f"pw_data{k}"),
                   Signal(cfg.pe_in, name=f"pw_en{k}")) for k in range(2)}
        p_r = {k: (Signal(len(self.c_raddr[0]), name=f"pr_row{k}"), Signal(name=f"pr_en{k}"))
               for k in range(2)}
        # Two words an access for the DMA engine; without it (the host alone) one.
        n = 2 if cfg.ext_bytes else 1
        writes = [place(self.p_waddr + i) for i in range(n)]
        words = [self.p_wdata.word_select(i, 32)[:wbits] for i in range(n)]
        full = (1 << (wbits // 8)) - 1
        for k in range(2):
            row, data, enables = p_w[k]
            hit = [(writes[i][0] == k) & self.p_wen[i] for i in range(n)]
            # Both words of the pair in one pool word (pe_in > 4), or one word per parity.
            first = [hit[0] & (writes[0][2] == s) for s in range(q)]
            both = [first[s] | (hit[1] & (writes[1][2] == s)) if n == 2 else first[s]
                    for s in range(q)]
            m.d.comb += [row.eq(Mux(hit[0], writes[0][1], writes[1][1]) if n == 2
                                else writes[0][1]),
                         data.eq(Cat(*[Mux(first[s], words[0], words[1]) if n == 2
                                       else words[0] for s in range(q)])),
                         enables.eq(Cat(*[Mux(both[s], full, 0)[:wbits // 8]
                                          for s in range(q)]))]
        for i in range(n):
            parity, row, _ = place(self.p_raddr + i)
            for k in range(2):
                with m.If(parity == k):
                    m.d.comb += [p_r[k][0].eq(row), p_r[k][1].eq(self.p_ren)]
        picks = [Signal.like(place(self.p_raddr + i)[0], name=f"pick_parity{i}")
                 for i in range(n)]
        subs = [Signal(max(1, lq), name=f"pick_sub{i}") for i in range(n)]
        with m.If(self.p_ren):
            for i in range(n):
                parity, _, sub = place(self.p_raddr + i)
                m.d.sync += [picks[i].eq(parity), subs[i].eq(sub)]

        c_data, p_data = [], []
        for k in range(2):
            c_bank = Signal(max(1, bank_bits), name=f"c_bank{k}")
            p_bank = Signal(max(1, bank_bits), name=f"p_bank{k}")
            with m.If(self.c_ren[k]):
                m.d.sync += c_bank.eq(bank_of(self.c_raddr[k]))
            with m.If(p_r[k][1]):
                m.d.sync += p_bank.eq(bank_of(p_r[k][0]))
            c_reads, p_reads = [], []
            for b in range(banks):
                mem = Memory(shape=width, depth=rows, init=[])
                m.submodules[f"ram{k}_{b}"] = mem
                rp, wp = mem.read_port(), mem.write_port(granularity=8)
                own = self.owner[b]
                c_in = bank_of(self.c_raddr[k]) == b
                p_in = bank_of(p_r[k][0]) == b
                m.d.comb += [
                    rp.addr.eq(Mux(own, p_r[k][0], self.c_raddr[k])[:row_bits]),
                    rp.en.eq(Mux(own, p_r[k][1] & p_in, self.c_ren[k] & c_in)),
                    wp.addr.eq(Mux(own, p_w[k][0], self.c_waddr[k])[:row_bits]),
                    wp.data.eq(Mux(own, p_w[k][1], self.c_wdata[k])),
                    wp.en.eq(Mux(own, Mux(bank_of(p_w[k][0]) == b, p_w[k][2], 0),
                                 Mux(bank_of(self.c_waddr[k]) == b, self.c_wen[k], 0))),
                ]
                c_reads.append(rp.data)
                p_reads.append(rp.data)
            c_data.append(self._select(m, c_reads, c_bank, f"c_read{k}"))
            p_data.append(self._select(m, p_reads, p_bank, f"p_read{k}"))
            m.d.comb += self.c_rdata[k].eq(c_data[k])
        for i in range(n):
            row = Mux(picks[i], p_data[1], p_data[0])
            m.d.comb += self.p_rdata.word_select(i, 32).eq(
                row.word_select(subs[i], 32) if lq else row[:wbits])
        return m

    @staticmethod
    def _select(m, values, index, name):
        if len(values) == 1:
            return values[0]
        out = Signal.like(values[0], name=name)
        with m.Switch(index):
            for b, value in enumerate(values):
                with m.Case(b):
                    m.d.comb += out.eq(value)
        return out
