"""The UART bridge: framed, CRC-checked requests from the host become host bus accesses.

Frames are defined in `striate.sw.runtime.framing`. Write data is buffered until the frame's CRC has
checked, so a corrupted request is never executed; a partial frame is dropped after ``timeout``
idle cycles.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...sw.runtime import framing
from ...sw.mapping import memmap


def _crc16_terms():
    """For each CRC output bit, the input bits (CRC bit i -> i, byte bit j -> 16 + j) it is the
    XOR of: the byte-wise CRC-16/CCITT-FALSE update is linear over GF(2)."""
    bits = [{i} for i in range(16)]
    for j in range(8):
        bits[8 + j] = bits[8 + j] ^ {16 + j}
    for _ in range(8):
        top = bits[15]
        bits = [set()] + bits[:15]
        for i in range(16):
            if (0x1021 >> i) & 1:
                bits[i] = bits[i] ^ top
    return bits


_CRC16_TERMS = _crc16_terms()


def crc16_byte(crc, byte):
    """CRC-16/CCITT-FALSE after one more byte, as 16 XOR trees."""
    inputs = [crc[i] for i in range(16)] + [byte[j] for j in range(8)]
    out = []
    for terms in _CRC16_TERMS:
        value = Const(0, 1)
        for t in sorted(terms):
            value = value ^ inputs[t]
        out.append(value)
    return Cat(*out)


class Bridge(wiring.Component):
    def __init__(self, timeout: int, max_words: int = framing.MAX_WORDS):
        self.timeout, self.max_words = timeout, max_words
        super().__init__({
            "i": In(stream.Signature(8)), "o": Out(stream.Signature(8)),
            "addr": Out(memmap.ADDR_BITS), "w_en": Out(1), "w_data": Out(32), "r_en": Out(1),
            "r_data": In(32), "r_valid": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf = buf = Memory(shape=32, depth=self.max_words, init=[])
        bw, br = buf.write_port(), buf.read_port(transparent_for=())
        cmd, seq, status = Signal(8), Signal(8), Signal(8)
        addr, count = Signal(memmap.ADDR_BITS), Signal(16)
        # One CRC register and update for both directions (a response follows its request):
        # ``crc_next`` is the CRC after ``crc_byte``, the received byte unless a state sending
        # a byte says otherwise.
        crc, rx_crc = Signal(16, init=0xFFFF), Signal(16)
        crc_byte = Signal(8)
        crc_next = crc16_byte(crc, crc_byte)
        pos = Signal(range(4 * self.max_words + 8))      # byte index within a frame section
        word = Signal(32)
        idle = Signal(range(self.timeout + 1))
        k = Signal(range(self.max_words + 1))
        byte = self.i.payload
        take = self.i.valid & self.i.ready
        m.d.comb += crc_byte.eq(byte)
        # tx: the byte to send and a strobe
        send, send_byte = Signal(), Signal(8)
        m.d.comb += [self.o.valid.eq(send), self.o.payload.eq(send_byte)]

        with m.If(take):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.timeout):
            m.d.sync += idle.eq(idle + 1)

        with m.FSM():
            with m.State("SYNC"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(take & (byte == framing.REQ_SYNC)):
                    m.d.sync += [crc.eq(0xFFFF), pos.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):                     # cmd seq addr0 addr1 addr2 cnt0 cnt1
                m.d.comb += self.i.ready.eq(1)
                with m.If(take):
                    m.d.sync += [crc.eq(crc_next), pos.eq(pos + 1)]
                    with m.Switch(pos):
                        with m.Case(0):
                            m.d.sync += cmd.eq(byte)
                        with m.Case(1):
                            m.d.sync += seq.eq(byte)
                        with m.Case(2, 3, 4):
                            m.d.sync += addr.eq(Cat(addr[8:], byte))
                        with m.Case(5):
                            m.d.sync += count[:8].eq(byte)
                        with m.Case(6):
                            m.d.sync += [count[8:].eq(byte), pos.eq(0)]
                            m.next = "CHECK_HEADER"
                with m.Elif(idle == self.timeout):
                    m.next = "SYNC"
            with m.State("CHECK_HEADER"):
                bad = ((cmd != framing.WRITE) & (cmd != framing.READ)) | (count == 0) | \
                      (count > self.max_words)
                with m.If(bad):
                    m.d.sync += [status.eq(framing.E_FRAME), count.eq(0)]
                    m.next = "RESPOND"
                with m.Elif(cmd == framing.WRITE):
                    m.next = "DATA"
                with m.Else():
                    m.next = "CRC"
            with m.State("DATA"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(take):
                    m.d.sync += [crc.eq(crc_next), pos.eq(pos + 1),
                                 word.eq(Cat(word[8:], byte))]
                    m.d.comb += [bw.addr.eq(pos >> 2), bw.data.eq(Cat(word[8:], byte)),
                                 bw.en.eq(pos[:2] == 3)]
                    with m.If(pos == (count << 2) - 1):
                        m.d.sync += pos.eq(0)
                        m.next = "CRC"
                with m.Elif(idle == self.timeout):
                    m.next = "SYNC"
            with m.State("CRC"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(take):
                    m.d.sync += [rx_crc.eq(Cat(rx_crc[8:], byte)), pos.eq(pos + 1)]
                    with m.If(pos == 1):
                        m.next = "CHECK_CRC"
                with m.Elif(idle == self.timeout):
                    m.next = "SYNC"
            with m.State("CHECK_CRC"):
                m.d.sync += k.eq(0)
                with m.If(rx_crc != crc):
                    m.d.sync += [status.eq(framing.E_CRC), count.eq(0)]
                    m.next = "RESPOND"
                with m.Elif(cmd == framing.WRITE):
                    m.d.comb += [br.addr.eq(0), br.en.eq(1)]
                    m.next = "WRITE"
                with m.Else():
                    m.d.sync += status.eq(framing.OK)
                    m.next = "RESPOND"
            with m.State("WRITE"):                      # one bus write per cycle
                m.d.comb += [self.addr.eq(addr + k), self.w_data.eq(br.data), self.w_en.eq(1),
                             br.addr.eq(k + 1), br.en.eq(1)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == count - 1):
                    m.d.sync += [status.eq(framing.OK), count.eq(0)]
                    m.next = "RESPOND"
            self._respond(m, status, seq, count, cmd, addr, k, word, pos, send, send_byte,
                          crc, crc_byte, crc_next)
        return m

    def _respond(self, m, status, seq, count, cmd, addr, k, word, pos, send, send_byte,
                 tx_crc, crc_byte, crc_next):
        """Send ``5A status seq count [data] crc``; reads fetch each word just before sending."""
        sent = self.o.valid & self.o.ready

        def emit(value, then, update_crc=True):
            m.d.comb += [send.eq(1), send_byte.eq(value), crc_byte.eq(value)]
            with m.If(sent):
                if update_crc:
                    m.d.sync += tx_crc.eq(crc_next)
                m.next = then

        with m.State("RESPOND"):
            m.d.comb += [send.eq(1), send_byte.eq(framing.RESP_SYNC)]
            with m.If(sent):
                m.d.sync += [tx_crc.eq(0xFFFF), k.eq(0)]
                m.next = "R_STATUS"
        with m.State("R_STATUS"):
            emit(status, "R_SEQ")
        with m.State("R_SEQ"):
            emit(seq, "R_CNT0")
        with m.State("R_CNT0"):
            emit(count[:8], "R_CNT1")
        with m.State("R_CNT1"):
            m.d.comb += [send.eq(1), send_byte.eq(count[8:]), crc_byte.eq(count[8:])]
            with m.If(sent):
                m.d.sync += tx_crc.eq(crc_next)
                with m.If((status == framing.OK) & (cmd == framing.READ)):
                    m.next = "R_FETCH"
                with m.Else():
                    m.next = "R_CRC0"
        with m.State("R_FETCH"):
            m.d.comb += [self.addr.eq(addr + k), self.r_en.eq(1)]
            m.next = "R_WAIT"
        with m.State("R_WAIT"):
            with m.If(self.r_valid):
                m.d.sync += [word.eq(self.r_data), pos.eq(0)]
                m.next = "R_DATA"
        with m.State("R_DATA"):
            m.d.comb += [send.eq(1), send_byte.eq(word[:8]), crc_byte.eq(word[:8])]
            with m.If(sent):
                m.d.sync += [tx_crc.eq(crc_next), word.eq(word >> 8),
                             pos.eq(pos + 1)]
                with m.If(pos == 3):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == count - 1):
                        m.next = "R_CRC0"
                    with m.Else():
                        m.next = "R_FETCH"
        with m.State("R_CRC0"):
            emit(tx_crc[:8], "R_CRC1", update_crc=False)
        with m.State("R_CRC1"):
            emit(tx_crc[8:], "SYNC", update_crc=False)
