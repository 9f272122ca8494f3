// C interface to the Verilated accelerator behind its UART bridge, clocked in C++.
// The host side of the serial line lives here: bytes to send are serialized 8N1 onto rx,
// bytes on tx are deserialized into a buffer.
#include <cstdint>
#include <deque>
#include "Vtop.h"
#include "verilated.h"

struct USim {
    VerilatedContext ctx;
    Vtop top{&ctx};
    int divisor;
    uint64_t cycles = 0;
    std::deque<uint8_t> to_device, from_device;
    int send_bits = 0, send_count = 0; uint16_t send_frame = 0x3FF;
    int recv_state = -1, recv_count = 0; uint8_t recv_byte = 0;   // -1: idle
    explicit USim(int d) : divisor(d) {}

    void tick() {
        if (send_bits == 0 && !to_device.empty()) {
            send_frame = (uint16_t)((to_device.front() << 1) | 0x200);  // start 0, data, stop 1
            to_device.pop_front();
            send_bits = 10; send_count = divisor;
        }
        top.rx = send_bits ? (send_frame & 1) : 1;
        top.clk = 1; top.eval();
        top.clk = 0; top.eval();
        ++cycles;
        if (send_bits && --send_count == 0) {
            send_frame >>= 1; --send_bits; send_count = divisor;
        }
        int tx = top.tx;
        if (recv_state < 0) {
            if (!tx) { recv_state = 0; recv_count = divisor + divisor / 2; recv_byte = 0; }
        } else if (--recv_count == 0) {
            if (recv_state < 8) {
                recv_byte |= (uint8_t)(tx << recv_state);
                ++recv_state; recv_count = divisor;
            } else {
                if (tx) from_device.push_back(recv_byte);     // stop bit must be 1
                recv_state = -1;
            }
        }
    }
};

extern "C" {

void *usim_new(int divisor) {
    USim *s = new USim(divisor);
    s->top.rst = 1; s->top.rx = 1; s->top.clk = 0; s->top.eval();
    s->tick(); s->tick();
    s->top.rst = 0;
    s->tick();
    return s;
}

void usim_free(void *p) { delete static_cast<USim *>(p); }

void usim_send(void *p, const uint8_t *data, uint32_t n) {
    USim *s = static_cast<USim *>(p);
    for (uint32_t i = 0; i < n; ++i) s->to_device.push_back(data[i]);
}

// Run until `want` bytes have arrived or `max_cycles` passed; return the bytes available.
uint32_t usim_run(void *p, uint64_t max_cycles, uint32_t want) {
    USim *s = static_cast<USim *>(p);
    for (uint64_t i = 0; i < max_cycles && s->from_device.size() < want; ++i) s->tick();
    return (uint32_t)s->from_device.size();
}

uint32_t usim_recv(void *p, uint8_t *out, uint32_t max) {
    USim *s = static_cast<USim *>(p);
    uint32_t n = 0;
    while (n < max && !s->from_device.empty()) { out[n++] = s->from_device.front(); s->from_device.pop_front(); }
    return n;
}

uint32_t usim_pending(void *p) { return (uint32_t)static_cast<USim *>(p)->to_device.size(); }

uint64_t usim_cycles(void *p) { return static_cast<USim *>(p)->cycles; }

}
