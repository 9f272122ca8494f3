// C interface to the Verilated accelerator, clocked entirely in C++ (loaded with ctypes).
// Bus protocol: see striate.sw.memmap; one write or read per clock cycle.
#include <cstdint>
#include "Vtop.h"
#include "verilated.h"

struct Sim {
    VerilatedContext ctx;
    Vtop top{&ctx};
    uint64_t cycles = 0;
    void tick() {
        top.clk = 1; top.eval();
        top.clk = 0; top.eval();
        ++cycles;
    }
};

extern "C" {

void *sim_new() {
    Sim *s = new Sim();
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
        s->tick();
        s->top.r_en = 0; s->top.eval();
        out[i] = s->top.r_data;
    }
}

void sim_step(void *p, uint64_t n) {
    Sim *s = static_cast<Sim *>(p);
    for (uint64_t i = 0; i < n; ++i) s->tick();
}

uint64_t sim_cycles(void *p) { return static_cast<Sim *>(p)->cycles; }

}
