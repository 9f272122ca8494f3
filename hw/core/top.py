"""The accelerator top: memories, host bus, sequencer and the streaming datapath.

Datapath: `WindowGen` -> `Fetch` (activation memory + weight memory) -> `MacArray` -> `Requant`
(parameter memory) -> `Pool` -> `Writer` (activation memory). The register map and memory
windows are defined in `striate.sw.mapping.memmap`. The activation memory is one pool of words
whose even words live in one RAM and odd words in another.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from ...sw.mapping import derive, memmap
from ...sw.mapping.descriptor import OP_ADD, OP_DW, POOL_UPSAMPLE
from ...sw.config import AcceleratorConfig
from .actpool import ActPool
from .depthwise import DwWalk, DwWindow
from .dma import AXI_PORTS, Dma, axi_ports
from .engines import TwoEngineSequencer
from .eltwise import AddUnit
from .layouts import Layouts
from .pe import Fetch, MacArray
from .post import Pool, Requant, SerialPost
from .sequencer import Sequencer
from .skid import Skid
from .window import DERIVED, FIELDS, GROUPS, WindowGen
from .writer import Writer

BUS = {"addr": memmap.ADDR_BITS, "w_en": 1, "w_data": 32, "r_en": 1}


class Accelerator(wiring.Component):
    """One accelerator instance for ``config``.

    Host bus (word addressed, see `striate.sw.mapping.memmap`): drive ``addr`` with ``w_en`` and
    ``w_data`` for one cycle to write; drive ``r_en`` for one cycle to read, and ``r_data`` is
    valid in the cycle ``r_valid`` is high (the next one).
    """

    def __init__(self, config: AcceleratorConfig, weight_ram=None, products=None):
        """``weight_ram(width, depth)``, if given, builds the weight memory instead of an
        Amaranth memory: a component with ``addr``, ``r_en``, ``r_data``, ``w_en`` (one bit per
        32-bit word) and ``w_data``, such as `striate.hw.platform.spram.Ice40Spram`.
        ``products``, if given, makes the PE array's multiplications (`MacArray`)."""
        self.config = config
        self._weight_ram, self._products = weight_ram, products
        self._l = Layouts(config)
        ports = {name: In(width) for name, width in BUS.items()}
        ports.update({"r_data": Out(32), "r_valid": Out(1), "busy": Out(1), "done": Out(1)})
        if config.ext_bytes:
            assert weight_ram is None, "transfers write the weight memory's second port"
            ports.update(axi_ports())
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        # CTRL.ABORT resets the sequencer and the whole datapath (not the memories, counters'
        # stamps or registers): a run that hangs can be stopped and the next one starts clean.
        # It is registered: the bus decode stays off the paths into every engine's registers.
        self._abort = abort = Signal()

        def engine(name, block):
            m.submodules[name] = ResetInserter(abort)(block)
            return block
        ext = self.config.ext_bytes
        seq = engine("seq", (TwoEngineSequencer if ext else Sequencer)(self._l))
        self._dma = engine("dma", Dma()) if ext else None
        if ext:
            self._connect_dma(m, seq, self._dma)
        win = engine("win", WindowGen(self._l))
        fetch = engine("fetch", Fetch(self._l))
        mac = engine("mac", MacArray(self._l, self._products))
        writer = engine("writer", Writer(self._l))
        self._depthwise = Const(0)
        feed, fetched = fetch.i, fetch.o
        if self.config.mac_stages:
            # The array's stall reaches the window generator's and the walk's counters from a
            # register, and the fetch and the memories' read enables from another.
            skid = engine("fetch_skid", Skid(self._l.window))
            connect(m, skid.o, fetch.i)
            feed = skid.i
            skid = engine("operand_skid", Skid(self._l.operands))
            connect(m, fetch.o, skid.i)
            fetched = skid.o
        if self.config.depthwise_kernel:
            walk = engine("dwwalk", DwWalk(self._l))
            window = engine("dwwindow", DwWindow(self._l))
            self._depthwise = seq.desc.op == OP_DW
            self._route(m, win, walk, feed, fetched, window, mac)
            self._configure_walk(m, seq, walk)
        else:
            connect(m, win.o, feed)
            connect(m, fetched, mac.i)

        def link(name, source, sink):
            """``source``'s pixels into ``sink``, with `mac_stages` through a skid buffer: the
            sink's stall then reaches the source's registers from a register."""
            if self.config.mac_stages:
                skid = engine(name, Skid(self._l.pixels))
                connect(m, source, skid.i)
                source = skid.o
            connect(m, source, sink)
        if self.config.serial_scale_bits:
            requant = pool = engine("post", SerialPost(self._l))
            connect(m, mac.o, requant.i)
        else:
            requant = engine("requant", Requant(self._l))
            pool = engine("pool", Pool(self._l))
            connect(m, mac.o, requant.i)
            link("requant_skid", requant.o, pool.i)
        # The writer's stall, decoded from the descriptor, reaches the pool's wide window
        # registers (or the serial post-processing's) from a register.
        link("pool_skid", pool.o, writer.i)
        adder = engine("add", AddUnit(self._l)) if self.config.residual_add else None
        self._configure(m, seq, win, requant, pool, writer, adder)
        if self.config.pairs:
            d = seq.desc
            # a pooled pair's two pixels leave the pool as one: the writer stores it as any
            m.d.comb += [win.pair.eq(d.pair), win.merge.eq(d.merge), mac.pair.eq(d.pair),
                         writer.pair.eq(d.pair & (d.pool == 0))]
            if pool is not requant:
                m.d.comb += pool.pair.eq(d.pair)

        # Output pixels the window generator has issued and the writer not yet written: at
        # most one per pipeline register between them (about twenty).
        outstanding = Signal(8)
        dw = self._depthwise
        writes, walked = win.writes, win.done
        if self.config.depthwise_kernel:
            writes, walked = win.writes | walk.writes, Mux(dw, walk.done, win.done)
            m.d.comb += [walk.start.eq(seq.run & dw), mac.dw.eq(dw), writer.dw.eq(dw),
                         requant.dw.eq(dw)]
            if pool is not requant:
                m.d.comb += pool.dw.eq(dw)
        written = writer.written
        if self.config.psum_entries:    # a chunk that keeps its sums writes none: it is done
            # once every conv pixel it issued has reached the partial-sum memory
            d = seq.desc
            m.d.comb += [mac.start.eq(seq.run), mac.psum_in.eq(d.psum_in),
                         mac.psum_out.eq(d.psum_out)]
            emitted = win.o.valid & win.o.ready & win.o.payload.last
            writes = Mux(d.psum_out, emitted, writes)
            written = Mux(d.psum_out, mac.psum_written, written)
        m.d.sync += outstanding.eq(Mux(abort, 0, outstanding + writes - written))
        conv_done = walked & (outstanding == 0)
        self._adding = adding = (seq.desc.op == OP_ADD) if adder is not None else Const(0)
        m.d.comb += [seq.layer_done.eq(Mux(adding, adder.done, conv_done) if adder is not None
                                       else conv_done),
                     seq.pe_busy.eq(mac.busy), win.start.eq(seq.run & ~adding & ~dw),
                     self.busy.eq(seq.busy), self.done.eq(seq.done)]
        if adder is not None:
            m.d.comb += adder.start.eq(seq.run & adding)
        self._seq = seq
        self._memories(m, seq, fetch, requant, writer, adder)
        return m

    def _connect_dma(self, m, seq, dma):
        mv = seq.move
        m.d.comb += [dma.start.eq(seq.m_start), dma.narrow.eq(seq.narrow),
                     seq.dma_busy.eq(dma.busy), seq.dma_error.eq(dma.error)]
        m.d.comb += [getattr(dma, name).eq(getattr(mv, name)) for name in
                     ("store", "ext_addr", "local_addr", "length", "count", "ext_stride",
                      "local_stride")]
        for name, direction, _ in AXI_PORTS:
            port, inner = getattr(self, "axi_" + name), getattr(dma, "axi_" + name)
            m.d.comb += (port.eq(inner) if direction is Out else inner.eq(port))

    def _route(self, m, win, walk, feed, fetched, window, mac):
        """The datapath of the layer running: window generator -> fetch -> PE array, or for a
        depthwise layer depthwise walk -> fetch -> depthwise window -> PE array (fixed while
        a layer runs). ``feed`` is the stream into the fetch and ``fetched`` the one out of it
        (the fetch's own or skid buffers')."""
        dw = self._depthwise

        def pick(a, b):
            return Mux(dw, a.payload.as_value(), b.payload.as_value())
        m.d.comb += [
            feed.valid.eq(Mux(dw, walk.o.valid, win.o.valid)), feed.payload.eq(
                pick(walk.o, win.o)),
            win.o.ready.eq(feed.ready & ~dw), walk.o.ready.eq(feed.ready & dw),
            window.i.valid.eq(fetched.valid & dw), window.i.payload.eq(fetched.payload),
            mac.i.valid.eq(Mux(dw, window.o.valid, fetched.valid)),
            mac.i.payload.eq(pick(window.o, fetched)),
            fetched.ready.eq(Mux(dw, window.i.ready, mac.i.ready)),
            window.o.ready.eq(mac.i.ready & dw)]

    def _configure_walk(self, m, seq, walk):
        d = seq.desc
        fields = {"in_h": d.in_h, "in_w": d.in_w, "k_h": d.k_h, "k_w": d.k_w,
                  "s_h": d.stride_h, "s_w": d.stride_w, "p_h": d.pad_h, "p_w": d.pad_w,
                  "out_h": d.out_h, "out_w": d.out_w}
        m.d.comb += [getattr(walk, name).eq(value) for name, value in fields.items()]
        up = d.pool == POOL_UPSAMPLE            # on a depthwise layer: upsampling
        m.d.comb += [walk.cg_n.eq(seq.cg_n), walk.hw_in.eq(seq.hw_in),
                     walk.in_base.eq(seq.in_base), walk.w_base.eq(seq.w_base),
                     walk.up_h.eq(Mux(up, d.pool_k_h, 1)), walk.up_w.eq(Mux(up, d.pool_k_w, 1))]

    def _configure(self, m, seq, win, requant, pool, writer, adder):
        """Wire descriptor fields and derived sizes to the blocks."""
        d = seq.desc
        fields = {"in_h": d.in_h, "in_w": d.in_w, "k_h": d.k_h, "k_w": d.k_w,
                  "s_h": d.stride_h, "s_w": d.stride_w, "p_h": d.pad_h, "p_w": d.pad_w,
                  "conv_h": d.conv_h, "conv_w": d.conv_w, "pk_h": d.pool_k_h, "pk_w": d.pool_k_w,
                  "ps_h": d.pool_stride_h, "ps_w": d.pool_stride_w, "pp_h": d.pool_pad_h,
                  "pp_w": d.pool_pad_w, "out_h": d.out_h, "out_w": d.out_w}
        assert set(fields) == set(FIELDS)
        fields.update({name: getattr(seq, name) for name in GROUPS + DERIVED})
        m.d.comb += [getattr(win, name).eq(value) for name, value in fields.items()]
        m.d.comb += [
            win.in_base.eq(seq.in_base), win.w_base.eq(seq.w_base),
            requant.p_base.eq(seq.p_base), requant.lo.eq(d.act_lo), requant.hi.eq(d.act_hi),
            pool.mode.eq(d.pool), pool.mult.eq(d.pool_mult), pool.shift.eq(d.pool_shift),
            pool.lo.eq(d.act_lo), pool.hi.eq(d.act_hi),
            writer.out_base.eq(seq.out_base), writer.out_c.eq(d.out_c),
            writer.out_hw.eq(seq.out_hw),
        ]
        if self.config.activation_tables:
            m.d.comb += writer.table.eq(d.table)
        if adder is not None:
            m.d.comb += [
                adder.a_base.eq(seq.in_base), adder.b_base.eq(seq.in2_base),
                adder.o_base.eq(seq.out_base), adder.pixels.eq(seq.hw_in),
                adder.groups.eq(seq.cg_n), adder.mult_a.eq(d.add_mult_a),
                adder.mult_b.eq(d.add_mult_b), adder.shift.eq(d.add_shift),
                adder.lo.eq(d.act_lo), adder.hi.eq(d.act_hi),
            ]

    def _memories(self, m, seq, fetch, requant, writer, adder):
        cfg = self.config
        shapes = memmap.memories(cfg)
        region = self.addr[memmap.REGION_SHIFT:]
        offset = self.addr[:memmap.REGION_SHIFT]
        host = ~seq.busy
        r_region = Signal.like(region)
        r_offset = Signal.like(offset)      # the read's offset, for picking the bus word of a row
        m.d.sync += [self.r_valid.eq(self.r_en), r_region.eq(region), r_offset.eq(offset)]
        reads = {}

        def window(key, mem_shape, engine_read, ram=None):
            """Host access to one memory, shared with the engine while busy; a transfer
            into it writes while busy."""
            width, rw = mem_shape.width, mem_shape.row_words
            sub_bits = rw.bit_length() - 1
            granularity = min(32, width)
            if ram is None:
                mem = Memory(shape=width, depth=mem_shape.depth, init=[])
                rp = mem.read_port()
                wp = mem.write_port(granularity=granularity)
            else:           # a single-port RAM: one address for both
                mem = ram(width, mem_shape.depth)
                rp = SimpleNamespace(addr=mem.addr, en=mem.r_en, data=mem.r_data)
                wp = SimpleNamespace(addr=mem.addr, en=mem.w_en, data=mem.w_data)
            m.submodules[f"mem{key}"] = mem
            row = offset >> sub_bits
            sel = (region == key)
            word = (Const(1, rw) << offset[:sub_bits])[:rw] if sub_bits else Const(1, 1)
            m.d.comb += [rp.addr.eq(row), rp.en.eq(self.r_en & sel),
                         wp.data.eq(Cat(*([self.w_data] * rw))[:width]),
                         wp.en.eq(Mux(self.w_en & sel & host, word, 0))]
            addr, en, data_in = engine_read
            with m.If(~host):
                m.d.comb += [rp.addr.eq(addr), rp.en.eq(en)]
            m.d.comb += data_in.eq(rp.data)
            if ram is None:     # one address for both ports, as in a single-port RAM (a
                m.d.comb += wp.addr.eq(rp.addr)     # transfer's write takes it over)
            if self._dma is not None and key in derive.move_regions(cfg):
                self._transfer_write(m, key, mem_shape, wp, ~host)
            reads[key] = rp.data.word_select(r_offset[:sub_bits], 32) if sub_bits else rp.data

        window(memmap.PROGRAM, shapes[memmap.PROGRAM],
               engine_read=(seq.prog_addr, seq.prog_en, seq.prog_data))
        window(memmap.PARAMS, shapes[memmap.PARAMS],
               engine_read=(requant.p_addr, requant.p_en, requant.p_data))
        window(memmap.WEIGHTS, shapes[memmap.WEIGHTS],
               engine_read=(fetch.w_addr, fetch.w_en, fetch.w_data), ram=self._weight_ram)
        self._pool(m, seq, fetch, writer, adder, region, offset, host, reads)
        if cfg.activation_tables:
            self._tables(m, writer, shapes[memmap.TABLES], region, offset, host, reads)
        memory_data = Signal(32)    # the memory read, valid unless the engine owns the ports
        with m.Switch(r_region):
            for key, value in reads.items():
                with m.Case(key):
                    m.d.comb += memory_data.eq(value)
        registers = self._registers(m, seq, region, offset, host)
        m.d.comb += self.r_data.eq(Mux(r_region == memmap.REG, registers,
                                       Mux(host, memory_data, 0)))

    def _transfer_write(self, m, key, shape, wp, busy):
        """Transfers into memory ``key`` take its write port while the engine runs: the
        two 32-bit words a cycle of `striate.hw.core.dma.Dma` (one a cycle into rows of one
        word)."""
        dma = self._dma
        rw = shape.row_words
        active = busy & (self._seq.m_target == key)
        if rw == 1:
            second = dma.wr_en[1] & ~dma.wr_en[0]
            with m.If(active):
                m.d.comb += [wp.addr.eq(dma.wr_addr + second),
                             wp.data.eq(Mux(second, dma.wr_data[32:], dma.wr_data[:32])),
                             wp.en.eq(dma.wr_en.any())]
            return
        sub_bits = rw.bit_length() - 1
        sub = dma.wr_addr[:sub_bits]
        with m.If(active):
            m.d.comb += [wp.addr.eq(dma.wr_addr >> sub_bits),
                         wp.data.eq(Cat(*([dma.wr_data] * (rw // 2)))),
                         wp.en.eq((dma.wr_en << sub)[:rw])]

    def _pool(self, m, seq, fetch, writer, adder, region, offset, host, reads):
        """The activation memory (`striate.hw.core.actpool`): the convolution datapath reads
        one word a cycle (both parities read its row; the word's parity picks the data; with
        pixel pairs the even RAM reads the next word's row, so the other RAM's data is the
        next word) and writes one; an add reads a word of each parity; the host and transfers use the word
        port."""
        cfg = self.config
        pool = m.submodules.act = ActPool(self._l, max(len(offset), 24))
        read_odd = Signal()             # the RAM the fetch read last (its data is current)
        with m.If(fetch.act_en):
            m.d.sync += read_odd.eq(fetch.act_addr[0])
        wr_addr, wr_data, wr_en = writer.wr_addr, writer.wr_data, writer.wr_en
        if adder is not None:
            wr_addr = Mux(self._adding, adder.wr_addr, wr_addr)
            wr_data = Mux(self._adding, adder.wr_data, wr_data)
            wr_en = Mux(self._adding, adder.wr_en, wr_en)
        for k in range(2):
            addr, en = fetch.act_addr >> 1, fetch.act_en
            if cfg.pairs and k == 0:
                # the even one of the fetch's word and the next (a pair's second pixel): the
                # same row for an even word, the next for an odd one
                addr = (fetch.act_addr + 1)[:len(fetch.act_addr)] >> 1
            if adder is not None:
                addr = Mux(self._adding, adder.ram_addr[k], addr)
                en = Mux(self._adding, adder.ram_en[k], en)
                m.d.comb += adder.ram_data[k].eq(pool.c_rdata[k])
            m.d.comb += [pool.c_raddr[k].eq(addr), pool.c_ren[k].eq(en),
                         pool.c_waddr[k].eq(wr_addr >> 1), pool.c_wdata[k].eq(wr_data),
                         pool.c_wen[k].eq(Mux(wr_addr[0] == k, wr_en, 0))]
        m.d.comb += fetch.act_data.eq(Mux(read_odd, pool.c_rdata[1], pool.c_rdata[0]))
        if cfg.pairs:
            m.d.comb += fetch.act_data2.eq(Mux(read_odd, pool.c_rdata[0], pool.c_rdata[1]))
        sel = region == memmap.ACT
        m.d.comb += [pool.p_waddr.eq(offset), pool.p_wdata.eq(self.w_data),
                     pool.p_wen.eq(self.w_en & sel & host),
                     pool.p_raddr.eq(offset), pool.p_ren.eq(self.r_en & sel & host),
                     pool.owner.eq(Mux(host, (1 << cfg.act_banks) - 1, 0))]
        if self._dma is not None:
            dma = self._dma
            mine = self._seq.m_target == memmap.ACT
            with m.If(~host):
                m.d.comb += [pool.p_waddr.eq(dma.wr_addr), pool.p_wdata.eq(dma.wr_data),
                             pool.p_wen.eq(Mux(mine, dma.wr_en, 0)),
                             pool.p_raddr.eq(dma.rd_addr), pool.p_ren.eq(dma.rd_en),
                             pool.owner.eq(self._seq.owner)]
            m.d.comb += dma.rd_data.eq(pool.p_rdata)
        reads[memmap.ACT] = pool.p_rdata[:32]

    def _tables(self, m, writer, shape, region, offset, host, reads):
        """The table memory: one copy per activation lane, so the writer looks up a word's
        lanes in one cycle. The host writes every copy and reads the first."""
        sel = region == memmap.TABLES
        for lane in range(self.config.pe_in):
            mem = Memory(shape=32, depth=shape.depth, init=[])
            m.submodules[f"mem{memmap.TABLES}_{lane}"] = mem
            rp, wp = mem.read_port(), mem.write_port()
            m.d.comb += [wp.addr.eq(offset), wp.data.eq(self.w_data),
                         wp.en.eq(self.w_en & sel & host),
                         rp.addr.eq(Mux(host, offset, writer.t_addr[lane])),
                         rp.en.eq(Mux(host, self.r_en & sel, 1)),
                         writer.t_data[lane].eq(rp.data)]
            if self._dma is not None:
                self._transfer_write(m, memmap.TABLES, shape, wp, ~host)
            if lane == 0:
                reads[memmap.TABLES] = rp.data

    def _registers(self, m, seq, region, offset, host):
        """The register file; returns the read data of the register region."""
        cfg = self.config
        layers = Signal(16)
        m.d.comb += [seq.layers.eq(layers)]
        is_reg = (region == memmap.REG)
        aborting = Signal()
        m.d.sync += self._abort.eq(aborting)
        with m.If(self.w_en & is_reg):
            with m.If(offset == memmap.CTRL):
                m.d.comb += [seq.start.eq(self.w_data[0] & ~self.w_data[1] & host),
                             aborting.eq(self.w_data[1])]
            with m.If((offset == memmap.LAYERS) & host):
                m.d.sync += layers.eq(self.w_data)
        lc = Memory(shape=32, depth=memmap.stamp_words(cfg), init=[])
        m.submodules.layer_cycles = lc
        lc_w, lc_r = lc.write_port(), lc.read_port()
        m.d.comb += [lc_w.addr.eq(seq.lc_addr), lc_w.data.eq(seq.lc_data), lc_w.en.eq(seq.lc_en),
                     lc_r.addr.eq(offset - memmap.LAYER_CYCLES), lc_r.en.eq(self.r_en & is_reg)]
        value = Signal(32)
        regs = {memmap.STATUS: Cat(seq.busy, seq.done, seq.failed), memmap.ERROR: seq.error,
                memmap.LAYER: seq.layer, memmap.LAYERS: layers, memmap.CYCLES: seq.cycles,
                memmap.PE_BUSY: seq.busy_cycles,
                memmap.CONFIG_ID: Const(memmap.config_id(cfg), 32)}
        if cfg.ext_bytes:
            regs[memmap.RUNNING] = seq.running
        is_lc = Signal()
        with m.If(self.r_en):
            m.d.sync += [value.eq(0), is_lc.eq(offset >= memmap.LAYER_CYCLES)]
            with m.Switch(offset):
                for index, reg in regs.items():
                    with m.Case(index):
                        m.d.sync += value.eq(reg)
        return Mux(is_lc, lc_r.data, value)
