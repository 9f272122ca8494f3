"""The PE array's int8 products on the iCE40's SB_MAC16 blocks, two to a block.

An SB_MAC16 in 8 x 8 mode (``MODE_8x8``) computes two independent products, the high bytes'
of A and B on the top output and the low bytes' on the bottom one, each signed with
``A_SIGNED`` and ``B_SIGNED``. Yosys maps each inferred multiplication to a block of its own, so
the iCEBreaker top instantiates the blocks directly: its PE array's eight products need four
blocks instead of eight. No register inside the block is used, so the products arrive in the
same cycle as Amaranth's ``a * b``, and the array's timing and cycle counts do not change.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Signal, Value

#: SB_MAC16 parameters: both 8 x 8 products straight to the outputs, operands signed.
DUAL_8X8 = {
    "NEG_TRIGGER": 0, "C_REG": 0, "A_REG": 0, "B_REG": 0, "D_REG": 0,
    "TOP_8x8_MULT_REG": 0, "BOT_8x8_MULT_REG": 0,
    "PIPELINE_16x16_MULT_REG1": 0, "PIPELINE_16x16_MULT_REG2": 0,
    "TOPOUTPUT_SELECT": 2, "TOPADDSUB_LOWERINPUT": 0, "TOPADDSUB_UPPERINPUT": 0,
    "TOPADDSUB_CARRYSELECT": 0,
    "BOTOUTPUT_SELECT": 2, "BOTADDSUB_LOWERINPUT": 0, "BOTADDSUB_UPPERINPUT": 0,
    "BOTADDSUB_CARRYSELECT": 0,
    "MODE_8x8": 1, "A_SIGNED": 1, "B_SIGNED": 1,
}
_TIED_LOW = ("AHOLD", "BHOLD", "CHOLD", "DHOLD", "IRSTTOP", "IRSTBOT", "ORSTTOP", "ORSTBOT",
             "OLOADTOP", "OLOADBOT", "ADDSUBTOP", "ADDSUBBOT", "OHOLDTOP", "OHOLDBOT", "CI",
             "ACCUMCI", "SIGNEXTIN")


def ice40_products(m, pairs):
    """``[a * b for a, b in pairs]`` (signed 8-bit operands, signed 16-bit products) on
    ``ceil(len(pairs) / 2)`` SB_MAC16 blocks added to module ``m``; an odd last pair shares
    its block with zeros."""
    products = []
    for n in range(0, len(pairs), 2):
        (a0, b0), (a1, b1) = pairs[n], pairs[n + 1] if n + 1 < len(pairs) else (0, 0)
        out = Signal(32, name=f"mac16_{n // 2}_o")
        m.submodules[f"mac16_{n // 2}"] = Instance(
            "SB_MAC16",
            **{f"p_{name}": value for name, value in DUAL_8X8.items()},
            i_CLK=ClockSignal(), i_CE=1,
            i_A=Cat(_byte(a0), _byte(a1)), i_B=Cat(_byte(b0), _byte(b1)),
            i_C=Const(0, 16), i_D=Const(0, 16),
            **{f"i_{name}": 0 for name in _TIED_LOW},
            o_O=out)
        products.append(out[0:16].as_signed())          # the low bytes' product
        if n + 1 < len(pairs):
            products.append(out[16:32].as_signed())     # the high bytes'
    return products


def _byte(value):
    return Const(value, 8) if isinstance(value, int) else Value.cast(value)[:8]
