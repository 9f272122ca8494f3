// C interface to the Verilated accelerator, clocked entirely in C++ (loaded with ctypes).
// Bus protocol: see striate.sw.memmap; one write or read per clock cycle. The model's inputs
// are registered (striate.sim.build.registered_inputs): what is set before a tick reaches the
// accelerator in the cycle after it.
// With STRIATE_EXT_BYTES defined, the accelerator's AXI4 master port is answered by the
// external memory model of striate.sim.extmem (same timing, in C++).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include "Vtop.h"
#include "verilated.h"

#ifdef STRIATE_EXT_BYTES
struct ExtMemory {
    static constexpr uint64_t BEAT = 8;
    uint8_t *data = static_cast<uint8_t *>(calloc(STRIATE_EXT_BYTES, 1));  // pages on use
    uint64_t size = STRIATE_EXT_BYTES, now = 0, credit = BEAT, latency = 100, bandwidth = 8;
    struct Read { uint64_t ready, addr, beats; };
    struct Write { uint64_t addr, beats; };
    std::deque<Read> reads;
    std::deque<Write> writes;
    std::deque<uint64_t> responses;
    bool rvalid = false, wready = false, bvalid = false;
    ~ExtMemory() { free(data); }

    uint64_t beat(uint64_t addr) const {
        uint64_t v = 0;
        if (addr + BEAT <= size) memcpy(&v, data + addr, BEAT);
        return v;
    }
    void drive(Vtop &top) {             // the slave's signals in the next cycle
        rvalid = !reads.empty() && reads.front().ready <= now && credit >= BEAT;
        wready = !writes.empty() && credit >= BEAT && !rvalid;
        bvalid = !responses.empty() && responses.front() <= now;
        top.axi_arready = 1; top.axi_awready = 1;
        top.axi_rvalid = rvalid; top.axi_wready = wready; top.axi_bvalid = bvalid;
        top.axi_bresp = 0;
        top.axi_rdata = rvalid ? beat(reads.front().addr) : 0;
        top.axi_rlast = rvalid && reads.front().beats == 1;
        top.axi_rresp = rvalid && reads.front().addr + BEAT > size ? 2 : 0;
    }
    void clock(const Vtop &top) {       // the edge, with the master's signals before it
        if (top.axi_arvalid) reads.push_back({now + latency, top.axi_araddr, top.axi_arlen + 1u});
        if (top.axi_awvalid) writes.push_back({top.axi_awaddr, top.axi_awlen + 1u});
        bool spent = false;
        if (rvalid && top.axi_rready) {
            Read &r = reads.front();
            r.addr += BEAT;
            if (--r.beats == 0) reads.pop_front();
            spent = true;
        } else if (wready && top.axi_wvalid) {
            Write &w = writes.front();
            if (w.addr + BEAT <= size)
                for (unsigned b = 0; b < BEAT; ++b)
                    if ((top.axi_wstrb >> b) & 1) data[w.addr + b] = (top.axi_wdata >> (8 * b)) & 0xFF;
            w.addr += BEAT;
            if (--w.beats == 0 || top.axi_wlast) {
                writes.pop_front();
                responses.push_back(now + latency);
            }
            spent = true;
        }
        if (bvalid && top.axi_bready) responses.pop_front();
        credit = credit - (spent ? BEAT : 0) + bandwidth;
        if (credit > BEAT) credit = BEAT;
        ++now;
    }
};
#endif

struct Sim {
    VerilatedContext ctx;
    Vtop top{&ctx};
    uint64_t cycles = 0;
#ifdef STRIATE_EXT_BYTES
    ExtMemory mem;
    void tick() {
        top.clk = 0; top.eval();
        mem.clock(top);
        mem.drive(top);                 // into the input registers at this edge
        top.clk = 1; top.eval();
        ++cycles;
    }
#else
    void tick() {
        top.clk = 1; top.eval();
        top.clk = 0; top.eval();
        ++cycles;
    }
#endif
};

extern "C" {

void *sim_new(int latency, int bandwidth) {
    Sim *s = new Sim();
#ifdef STRIATE_EXT_BYTES
    s->mem.latency = latency; s->mem.bandwidth = bandwidth;
#else
    (void)latency; (void)bandwidth;
#endif
    s->top.clk = 0; s->top.rst = 1; s->top.w_en = 0; s->top.r_en = 0;
    s->top.eval();
    s->tick(); s->tick();
    s->top.rst = 0;
    s->tick();
    return s;
}

void sim_free(void *p) { delete static_cast<Sim *>(p); }

void sim_write(void *p, uint32_t addr, const uint32_t *words, uint32_t n) {
    Sim *s = static_cast<Sim *>(p);
    for (uint32_t i = 0; i < n; ++i) {
        s->top.addr = addr + i; s->top.w_data = words[i]; s->top.w_en = 1;
        s->tick();
    }
    s->top.w_en = 0;
}

void sim_read(void *p, uint32_t addr, uint32_t *out, uint32_t n) {
    Sim *s = static_cast<Sim *>(p);
    for (uint32_t i = 0; i < n; ++i) {
        s->top.addr = addr + i; s->top.r_en = 1;
        s->tick();                      // into the input register
        s->top.r_en = 0;
        s->tick();                      // the read, at the accelerator
        out[i] = s->top.r_data;
    }
}

void sim_step(void *p, uint64_t n) {
    Sim *s = static_cast<Sim *>(p);
    for (uint64_t i = 0; i < n; ++i) s->tick();
}

uint64_t sim_cycles(void *p) { return static_cast<Sim *>(p)->cycles; }

void sim_ext_write(void *p, uint64_t addr, const uint8_t *bytes, uint64_t n) {
#ifdef STRIATE_EXT_BYTES
    memcpy(static_cast<Sim *>(p)->mem.data + addr, bytes, n);
#else
    (void)p; (void)addr; (void)bytes; (void)n;
#endif
}

void sim_ext_read(void *p, uint64_t addr, uint8_t *bytes, uint64_t n) {
#ifdef STRIATE_EXT_BYTES
    memcpy(bytes, static_cast<Sim *>(p)->mem.data + addr, n);
#else
    (void)p; (void)addr; (void)bytes; (void)n;
#endif
}

}
