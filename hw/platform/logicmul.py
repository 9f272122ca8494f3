"""Some of the PE array's int8 products in logic, so that a part's hard multipliers suffice.

The ECP5-85F has 156 MULT18X18D blocks, and Yosys maps every inferred multiplication to one.
A 128-MAC PE array beside the requantizer's, average pool's and add unit's multipliers (41
blocks) would need 169. `logic_products` builds the last ``count`` of the array's products as
logic instead (radix-4 Booth), which Yosys maps to LUTs and carry chains. The products are the
same signed 16-bit values and arrive in the same cycle, so the array's timing in cycles and
its results do not change.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed


def logic_product(m, a, b, name: str) -> Value:
    """``a * b`` for signed 8-bit ``a`` and ``b``, added to module ``m``: radix-4 Booth, four
    partial products ``d * a`` with ``d`` in -2..2 from bits ``2k+1, 2k, 2k-1`` of ``b``
    (a negative one inverted, its +1 in a fifth term), summed by a tree of adders. Each sum is
    kept: otherwise Yosys merges the tree into one multi-operand adder and maps it to LUTs
    (about 300 LUT4 a product instead of about 110 with carry chains)."""
    a, b = Value.cast(a), Value.cast(b)
    terms, negs = [], []
    for k in range(4):
        b1, b0 = b[2 * k + 1], b[2 * k]
        lo = b[2 * k - 1] if k else Const(0, 1)
        one = b0 ^ lo                                   # |d| = 1
        two = (b1 & ~b0 & ~lo) | (~b1 & b0 & lo)        # |d| = 2
        magnitude = Mux(two, a << 1, Mux(one, a, 0))
        partial = Signal(signed(10), name=f"{name}_partial{k}")
        m.d.comb += partial.eq(Mux(b1, ~magnitude, magnitude))
        terms.append(partial << 2 * k)
        negs.append(b1)
    terms.append(Cat(negs[0], 0, negs[1], 0, negs[2], 0, negs[3]))
    level = 0
    while len(terms) > 1:
        pairs = [terms[n:n + 2] for n in range(0, len(terms), 2)]
        terms = []
        for n, pair in enumerate(pairs):
            if len(pair) == 1:
                terms.append(pair[0])
                continue
            total = Signal(signed(17), name=f"{name}_sum{level}_{n}", attrs={"keep": 1})
            m.d.comb += total.eq(pair[0] + pair[1])
            terms.append(total)
        level += 1
    return terms[0]


class LogicProducts(Elaboratable):
    """``p[n] = a[n] * b[n]`` (`logic_product`), combinational, in a module of its own: with
    them inside the PE array's module this Yosys build's ABC9 fails an assertion
    (`GetSize(conn.first) == GetSize(conn.second)`) on 64 of them."""

    def __init__(self, count: int):
        self.a = [Signal(signed(8), name=f"a{n}") for n in range(count)]
        self.b = [Signal(signed(8), name=f"b{n}") for n in range(count)]
        self.p = [Signal(signed(16), name=f"p{n}") for n in range(count)]

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [p.eq(logic_product(m, a, b, f"product{n}"))
                     for n, (a, b, p) in enumerate(zip(self.a, self.b, self.p))]
        return m


def logic_products(count: int):
    """A `striate.hw.core.pe.MacArray` ``products`` function: ``[a * b for a, b in pairs]``
    with the last ``count`` products from `LogicProducts` and the others inferred (on the
    ECP5 each on a MULT18X18D)."""
    def products(m, pairs):
        first = len(pairs) - count
        m.submodules.logic_products = logic = LogicProducts(len(pairs) - first)
        m.d.comb += [port.eq(value) for n, (a, b) in enumerate(pairs[first:])
                     for port, value in ((logic.a[n], a), (logic.b[n], b))]
        return [a * b for a, b in pairs[:first]] + logic.p
    return products
