"""The DMA engine: moves data between the external memory, reached through an AXI4 master
port, and an on-chip memory (`striate.sw.mapping.descriptor.MoveDescriptor`).

The port has 64-bit data and issues INCR bursts of at most `BURST_BEATS` beats that never
cross a `BURST_BEATS * 8`-byte boundary (so never a 4 KB one), with up to `OUTSTANDING` bursts
in flight: with a first-word latency of 100 cycles a transfer of chunks of 8 beats or more
still streams one beat a cycle. The on-chip side moves two 32-bit words a cycle: word ``p``
and ``p + 1`` of the target memory's 32-bit words (`local`), the pair a beat holds; a chunk
may start and end on either word of a beat (addresses and lengths are multiples of 4
bytes). Loads write the words of each returning beat (``wr_*``); stores read them (``rd_*``,
data a cycle later) and send them as write beats, with byte strobes on a chunk's first and
last beat.

A transfer starts on ``start`` (its fields are registered then) and ``busy`` stays high until
its last beat is written, or for a store until its last write response has come back. An
error response sets ``error`` until the next start. ``narrow`` (a target whose rows are one
word, such as the program memory) writes one word a cycle: a beat then takes two cycles.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from ...sw.mapping.descriptor import MoveDescriptor

DATA_BITS = 64
BEAT_BYTES = DATA_BITS // 8
BURST_BEATS = 32
OUTSTANDING = 16
ADDR_BITS = 32
ID_BITS = 1
WORD_ADDR = MoveDescriptor.bits("local_addr") - 2   # 32-bit words of the on-chip side

# The AXI4 master's channels as flat ports named as AXI names them (prefix ``axi_``), so
# that verification models and memory controllers connect by name. (name, direction, width),
# direction from the master's side. Every burst has ID 0 (responses come back in order);
# the ID ports are there because AXI4 slaves and their models expect them.
AXI_PORTS = (
    ("awid", Out, ID_BITS), ("awaddr", Out, ADDR_BITS), ("awlen", Out, 8), ("awsize", Out, 3),
    ("awburst", Out, 2), ("awvalid", Out, 1), ("awready", In, 1),
    ("wdata", Out, DATA_BITS), ("wstrb", Out, BEAT_BYTES), ("wlast", Out, 1),
    ("wvalid", Out, 1), ("wready", In, 1),
    ("bid", In, ID_BITS), ("bresp", In, 2), ("bvalid", In, 1), ("bready", Out, 1),
    ("arid", Out, ID_BITS), ("araddr", Out, ADDR_BITS), ("arlen", Out, 8), ("arsize", Out, 3),
    ("arburst", Out, 2), ("arvalid", Out, 1), ("arready", In, 1),
    ("rid", In, ID_BITS), ("rdata", In, DATA_BITS), ("rresp", In, 2), ("rlast", In, 1),
    ("rvalid", In, 1), ("rready", Out, 1),
)
SIZE_8_BYTES, INCR = 3, 1

# What the burst generator tells the data side about each burst it issued.
BURST = data.StructLayout({
    "beats": range(BURST_BEATS + 1),
    "word": WORD_ADDR,           # on-chip word of the burst's first beat's low word
    "skip_first": 1,             # its first beat's low word lies before the chunk
    "skip_last": 1,              # its last beat's high word lies past the chunk
})


def axi_ports(prefix: str = "axi_") -> dict:
    """The AXI4 master's ports, for a component's signature."""
    return {prefix + name: direction(width) for name, direction, width in AXI_PORTS}


def transfer_ports() -> dict:
    """A transfer's fields, as the sequencer hands them to the engine."""
    return {name: In(MoveDescriptor.bits(name)) for name in
            ("store", "ext_addr", "local_addr", "length", "count", "ext_stride", "local_stride")}


class Dma(wiring.Component):
    def __init__(self):
        super().__init__({
            "start": In(1), "narrow": In(1), **transfer_ports(),
            "busy": Out(1), "error": Out(1),
            "wr_addr": Out(WORD_ADDR), "wr_data": Out(DATA_BITS), "wr_en": Out(2),
            "rd_addr": Out(WORD_ADDR), "rd_en": Out(1), "rd_data": In(DATA_BITS),
            **axi_ports(),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bursts = bursts = fifo.SyncFIFOBuffered(width=BURST.size,
                                                             depth=OUTSTANDING)
        store = Signal()
        issued = self._generate(m, bursts, store)
        loading = self._load(m, bursts, store)
        storing = self._store(m, bursts, store)
        m.d.comb += self.busy.eq(issued | loading | storing)
        with m.If(self.start):
            m.d.sync += [store.eq(self.store), self.error.eq(0)]
        with m.If((self.axi_rvalid & self.axi_rready & (self.axi_rresp != 0))
                  | (self.axi_bvalid & self.axi_bready & (self.axi_bresp != 0))):
            m.d.sync += self.error.eq(1)
        return m

    def _generate(self, m, bursts, store):
        """Issues the transfer's bursts, chunk after chunk, on the read or write address
        channel, and queues what the data side needs to know of each. Returns a signal that
        is high while bursts remain to be issued."""
        f = {name: Signal(MoveDescriptor.bits(name), name=f"t_{name}") for name in
             ("length", "count", "ext_stride", "local_stride")}
        active, setup = Signal(), Signal()
        left = Signal.like(f["count"])          # chunks after this one
        ext = Signal(ADDR_BITS)                 # this chunk's first byte
        word = Signal(WORD_ADDR)                # its first on-chip word
        beat = Signal(ADDR_BITS - 3)            # the next burst's first beat
        last_beat = Signal(ADDR_BITS - 3)       # the chunk's last beat
        first_beat = Signal(ADDR_BITS - 3)
        end_odd = Signal()                      # the chunk ends on a beat's low word
        pending_b = Signal(range(2 * OUTSTANDING + 1))   # write responses to come
        with m.If(self.start):
            m.d.sync += [active.eq(1), setup.eq(1), left.eq(self.count - 1),
                         ext.eq(self.ext_addr), word.eq(self.local_addr >> 2)]
            m.d.sync += [f[name].eq(getattr(self, name)) for name in f]
        end = ext + f["length"]
        with m.If(setup):               # a chunk's beats, a cycle after its start is known
            m.d.sync += [setup.eq(0), beat.eq(ext[3:]), first_beat.eq(ext[3:]),
                         last_beat.eq((end - 1)[3:]), end_odd.eq(end[2])]
        block_end = beat | (BURST_BEATS - 1)
        burst_last = Mux(block_end < last_beat, block_end, last_beat)
        info = Signal(BURST)
        m.d.comb += [info.beats.eq(burst_last - beat + 1),
                     info.word.eq(word + ((beat - first_beat) << 1) - ext[2]),
                     info.skip_first.eq((beat == first_beat) & ext[2]),
                     info.skip_last.eq((burst_last == last_beat) & end_odd),
                     bursts.w_data.eq(info)]
        # A burst goes out when the queue has room (and, for writes, responses are not too
        # many behind); the address channels hold it until accepted.
        room = bursts.w_rdy & (pending_b < OUTSTANDING)
        ready = Mux(store, self.axi_awready, self.axi_arready)
        go = active & ~setup & room & ready
        for ch in ("ar", "aw"):
            valid = active & ~setup & room & (store if ch == "aw" else ~store)
            m.d.comb += [getattr(self, f"axi_{ch}addr").eq(Cat(0, 0, 0, beat)),
                         getattr(self, f"axi_{ch}len").eq(burst_last - beat),
                         getattr(self, f"axi_{ch}size").eq(SIZE_8_BYTES),
                         getattr(self, f"axi_{ch}burst").eq(INCR),
                         getattr(self, f"axi_{ch}valid").eq(valid)]
        m.d.comb += bursts.w_en.eq(go)
        with m.If(go):
            m.d.sync += beat.eq(burst_last + 1)
            with m.If(burst_last == last_beat):
                with m.If(left == 0):
                    m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [left.eq(left - 1), setup.eq(1),
                                 ext.eq(ext + f["ext_stride"]),
                                 word.eq(word + (f["local_stride"] >> 2))]
        aw = self.axi_awvalid & self.axi_awready
        b = self.axi_bvalid & self.axi_bready
        m.d.comb += self.axi_bready.eq(1)
        m.d.sync += pending_b.eq(pending_b + aw - b)
        self._pending_b = pending_b
        return active

    def _load(self, m, bursts, store):
        """Writes each returning read beat's words. Returns busy."""
        head = Signal(BURST)
        m.d.comb += head.eq(bursts.r_data)
        j = Signal(range(BURST_BEATS))          # beat within the burst
        phase = Signal()                        # narrow targets: the beat's second cycle
        first, last = j == 0, j == head.beats - 1
        enables = Cat(~(first & head.skip_first), ~(last & head.skip_last))
        loading = bursts.r_rdy & ~store
        take = loading & self.axi_rvalid & (~self.narrow | phase | ~enables[1])
        m.d.comb += [self.axi_rready.eq(take), self.wr_addr.eq(head.word + (j << 1)),
                     self.wr_data.eq(self.axi_rdata)]
        with m.If(loading & self.axi_rvalid):
            m.d.comb += self.wr_en.eq(Mux(self.narrow, Mux(phase, enables & 2, enables & 1),
                                          enables))
            with m.If(self.narrow & enables[1]):
                m.d.sync += phase.eq(~phase)
        with m.If(take):
            m.d.sync += j.eq(Mux(last, 0, j + 1))
            m.d.comb += bursts.r_en.eq(last)
        return (bursts.level != 0) & ~store

    def _store(self, m, bursts, store):
        """Reads the words of each write beat and sends it; counts the responses. Returns
        busy."""
        head = Signal(BURST)
        m.d.comb += head.eq(bursts.r_data)
        j = Signal(range(BURST_BEATS))
        first, last = j == 0, j == head.beats - 1
        advance = ~self.axi_wvalid | self.axi_wready
        issue = bursts.r_rdy & store & advance
        strobes = Cat(Mux(first & head.skip_first, 0, 0xF)[:4],
                      Mux(last & head.skip_last, 0, 0xF)[:4])
        m.d.comb += [self.rd_addr.eq(head.word + (j << 1)), self.rd_en.eq(issue),
                     self.axi_wdata.eq(self.rd_data)]
        with m.If(advance):
            m.d.sync += [self.axi_wvalid.eq(issue), self.axi_wstrb.eq(strobes),
                         self.axi_wlast.eq(last)]
        with m.If(issue):
            m.d.sync += j.eq(Mux(last, 0, j + 1))
            m.d.comb += bursts.r_en.eq(last)
        return ((bursts.level != 0) & store) | self.axi_wvalid | (self._pending_b != 0)
