"""What the sequencer computes from a descriptor on its one shared shift-add unit.

Sizes and checks that need products or long sums are not built as parallel logic: the sequencer
(`striate.hw.core.sequencer`) runs the `PROGRAM` below, one term after another. The program is the one
definition: the generator builds its steps from it, and the cycle model (`striate.sw.golden.cycles`)
counts their cycles from it.

Each term ``(sign, a, b)`` adds ``sign * a * b`` to an accumulator; ``a`` and ``b`` name
descriptor fields, earlier results, channel group counts (`group_counts`), memory depths
(`depths`) or are integer constants. A `Size` stores one product in a result register; a
`Check` sums its terms and fails (sets its error) when the sum is positive, or, with
``strict``, when it is not negative. A term takes ``1 + max(1, b.bit_length())`` cycles (one to
load, one per bit of ``b``).

>>> fields = dict(op=1, pool=1, in_c=16, in_h=8, in_w=8, out_c=32, out_h=4, out_w=4, conv_h=8, conv_w=8,
...               k_h=5, k_w=5, stride_h=1, stride_w=1, pad_h=2, pad_w=2, pool_k_h=2,
...               pool_k_w=2, pool_stride_h=2, pool_stride_w=2, pool_pad_h=0, pool_pad_w=0,
...               in_base=0, out_base=32, in2_base=0, w_base=0, p_base=0)
>>> from striate.sw.config import AcceleratorConfig
>>> values, failed = run(fields, AcceleratorConfig(pe_out=16, pe_in=4))
>>> values["kk"], values["p_row"], failed
(100, 16, set())
>>> run(dict(fields, conv_h=10), AcceleratorConfig(pe_out=16, pe_in=4))[1]
{'shape'}
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AcceleratorConfig
from .descriptor import MOVE_TARGETS, OP_DW, POOL_NONE, POOL_UPSAMPLE, LayerDescriptor
from .memmap import ACT, PARAMS, WEIGHTS, bits_for, memories


@dataclass(frozen=True)
class Size:
    """``dest = a * b``, kept in a result register."""
    dest: str
    a: str
    b: str | int

    @property
    def terms(self):
        return ((1, self.a, self.b),)


@dataclass(frozen=True)
class Sum:
    """``dest = sum(sign * a * b)``, kept in a result register."""
    dest: str
    terms: tuple


@dataclass(frozen=True)
class Check:
    """Fails with ``error`` when ``sum(sign * a * b)`` is > 0 (``strict``: >= 0)."""
    error: str
    terms: tuple
    strict: bool = False


def _fits(n, k, s, p, size, extra=()):
    """``n`` windows of ``k`` at stride ``s`` exactly cover ``size`` plus ``2p`` padding:
    ``(n - 1) * s + k <= size + 2p < n * s + k``; with ``extra`` the first bound is one more
    (a convolution may pad one more row or column at the bottom or right than at the top or
    left: Keras' 'same' on an even total, `QLayer.pad_extra`)."""
    return (Check("shape", ((1, n, s), (1, k, 1), (-1, s, 1), (-1, size, 1), (-1, p, 2))
                  + extra),
            Check("shape", ((1, size, 1), (1, p, 2), (-1, n, s), (-1, k, 1)), strict=True))


PROGRAM = (
    Size("hw_in", "in_h", "in_w"),              # input pixels
    Size("kk", "wk_h", "kk_w"),                 # kernel rows times items per row (`kk_w`),
    Size("kk", "kk", "kk_g"),                   # items per conv pixel (weight words per group)
    Size("out_hw", "out_h", "wr_w"),            # output pixels (writer's group stride)
    Size("s_w_in", "in_w", "stride_h"),         # window walk: one conv row down, in words
    Size("step_y", "pool_stride_h", "stride_h"),   # next pooling window, in input rows / columns
    Size("step_x", "pool_stride_w", "stride_w"),
    Size("step_yw", "s_w_in", "pool_stride_h"),
    Size("rys0", "pool_pad_h", "stride_h"),     # first window's start, in input rows / columns
    Size("rxs0", "pool_pad_w", "stride_w"),
    Size("rysw0", "s_w_in", "pool_pad_h"),
    Size("p_row", "in_w", "pad_h"),             # conv padding rows, in words
    # (an upsampling layer's window is its output map, its pool kernel 1: `group_counts`)
    *_fits("conv_h", "k_h", "stride_h", "pad_h", "fit_h", ((-1, 1, 1),)),
    *_fits("conv_w", "k_w", "stride_w", "pad_w", "fit_w", ((-1, 1, 1),)),
    *_fits("out_h", "fit_pk_h", "pool_stride_h", "pool_pad_h", "conv_h"),
    *_fits("out_w", "fit_pk_w", "pool_stride_w", "pool_pad_w", "conv_w"),
    Check("act", ((1, "hw_in", "cg_n"), (1, "in_base", 1), (-1, "act_depth", 1))),
    Check("act", ((1, "out_hw", "out_cg"), (1, "out_base", 1), (-1, "act_depth", 1))),
    Check("weight", ((1, "kk", "w_og"), (1, "w_base", 1), (-1, "weight_depth", 1))),
    Check("param", ((1, "og_n", "param_rows"), (1, "p_base", 1), (-1, "param_depth", 1))),
)
# With the add path (`AcceleratorConfig.residual_add`): an add's second input lies inside the
# activation memory (for a convolution ``in2_base`` is 0, so it repeats the first act check).
ADD_CHECKS = (Check("act", ((1, "hw_in", "cg_n"), (1, "in2_base", 1), (-1, "act_depth", 1))),)
# With external memory: the words, weight rows and parameter rows a layer uses, which the
# sequencer compares with a transfer's (a transfer may not touch what a running layer uses).
SPANS = (
    Size("in_words", "hw_in", "cg_n"),
    Size("out_words", "out_hw", "out_cg"),
    Size("w_rows", "kk", "w_og"),
    Size("p_rows", "og_n", "param_rows"),
)
# With a partial-sum memory (`AcceleratorConfig.psum_entries`), run only for a descriptor
# with ``psum_in`` or ``psum_out`` (the sequencer ends the program before them otherwise):
# the conv pixels the window generator emits, at most output groups x output pixels x pool
# window, fit the memory.
PSUM_CHECKS = (
    Size("psum_n", "out_hw", "og_n"),
    Size("psum_n", "psum_n", "pool_k_h"),
    Check("psum", ((1, "psum_n", "pool_k_w"), (-1, "psum_depth", 1))),
)
# A transfer (`MoveDescriptor`): one past its last on-chip byte, within its memory; its
# external bytes within the external memory.
MOVE_PROGRAM = (
    Sum("m_end", ((1, "local_stride", "count"), (-1, "local_stride", 1), (1, "length", 1),
                  (1, "local_addr", 1))),
    Check("local", ((1, "m_end", 1), (-1, "local_bytes", 1))),
    Check("ext", ((1, "ext_stride", "count"), (-1, "ext_stride", 1), (1, "length", 1),
                  (1, "ext_addr", 1), (-1, "ext_bytes", 1))),
)


def _stored(steps) -> tuple:
    return tuple(dict.fromkeys(step.dest for step in steps if isinstance(step, (Size, Sum))))


RESULTS = _stored(PROGRAM)


# Without the depthwise datapath the weight block and geometry terms read the fields
# themselves (`group_counts` gives the same values then): no multiplexers for them; without
# pixel pairs (`AcceleratorConfig.pairs`) the written columns are ``out_w``.
_PLAIN = {"wk_h": "k_h", "wk_w": "k_w", "w_og": "og_n", "fit_h": "in_h", "fit_w": "in_w",
          "fit_pk_h": "pool_k_h", "fit_pk_w": "pool_k_w"}
# Items per kernel row and the groups they multiply: ``wk_w`` and ``cg_n``, or for a layer
# with merged lanes (`LayerDescriptor.merge`, with pixel pairs only) a group less at each odd
# kernel column, ``wk_w * cg_n - k_w // 2`` (`MERGE_PRELUDE`), and 1. Without pairs the
# kernel terms read ``wk_w`` and ``cg_n`` themselves.
_UNMERGED = {"kk_w": "wk_w", "kk_g": "cg_n"}
# Run first, and only for a descriptor with ``merge`` (the sequencer starts after it
# otherwise, so other layers take the cycles they took before merged lanes existed). Its first
# term reads the descriptor only: the channel group counts are registered from it a cycle
# after the program starts (`striate.hw.core.sequencer`).
MERGE_PRELUDE = (Sum("kw_items", ((-1, "kw_skip", 1), (1, "wk_w", "cg_n"))),)


def program(config: AcceleratorConfig) -> tuple:
    """The steps the sequencer of ``config`` runs: `PROGRAM`, `ADD_CHECKS` with the add
    path, `SPANS` with external memory and `PSUM_CHECKS` (last) with a partial-sum memory."""
    steps = PROGRAM + (ADD_CHECKS if config.residual_add else ()) + (SPANS if config.ext_bytes
                                                                     else ()) \
        + (PSUM_CHECKS if config.psum_entries else ())
    names = {} if config.pairs else {"wr_w": "out_w", **_UNMERGED}
    if config.pairs:
        steps = MERGE_PRELUDE + steps
    if not config.depthwise_kernel:
        names.update(_PLAIN)
        names = {a: _PLAIN.get(b, b) for a, b in names.items()}
    if not names:
        return steps

    def plain(term):
        sign, a, b = term
        return sign, names.get(a, a), names.get(b, b)
    return tuple(Size(step.dest, *plain((1, step.a, step.b))[1:]) if isinstance(step, Size)
                 else Sum(step.dest, tuple(map(plain, step.terms))) if isinstance(step, Sum)
                 else Check(step.error, tuple(map(plain, step.terms)), step.strict)
                 for step in steps)


def results(config: AcceleratorConfig) -> tuple:
    """The result registers of ``config``'s sequencer: of `program`, and of `MOVE_PROGRAM`
    with external memory."""
    return _stored(program(config) + (MOVE_PROGRAM if config.ext_bytes else ()))


ERRORS = ("shape", "act", "weight", "param", "local", "ext", "psum")


def uses_psum(fields: dict) -> bool:
    """Whether a descriptor reads or writes partial sums (the sequencer runs `PSUM_CHECKS`
    for it)."""
    return bool(fields.get("psum_in") or fields.get("psum_out"))


def _steps(fields: dict, config: AcceleratorConfig) -> tuple:
    """The steps the sequencer runs for descriptor ``fields``."""
    steps = program(config)
    if config.pairs and not fields.get("merge", 0):
        steps = steps[len(MERGE_PRELUDE):]
    if config.psum_entries and not uses_psum(fields):
        steps = steps[:-len(PSUM_CHECKS)]
    return steps


def limits(config: AcceleratorConfig) -> dict:
    """The largest value of each result that is a product of strides (at most
    ``max_stride``), 3-bit pads and ``in_w`` (at most ``max_width``) in a layer that passes the
    sequencer's limit checks; the hardware keeps these results in registers just that wide."""
    s, w, pad = config.max_stride, config.max_width, (1 << LayerDescriptor.bits("pad_h")) - 1
    return {"s_w_in": w * s, "step_y": s * s, "step_x": s * s, "step_yw": w * s * s,
            "rys0": pad * s, "rxs0": pad * s, "rysw0": w * s * pad, "p_row": w * pad}


def group_counts(fields: dict, config: AcceleratorConfig, registers: bool = False) -> dict:
    """Input, output (weight rows) and output (activation words) channel groups, and the
    weight block's shape: ``wk_h * wk_w * cg_n`` words for each of ``w_og`` output groups (a
    depthwise layer has one word per channel group: ``1 * 1 * cg_n``, once), and what the
    geometry checks see as the input size and pool kernel (an upsampling layer's window is its
    output map, its pool kernel 1). With ``registers``, the counts as the sequencer's
    registers keep them (`count_widths`)."""
    depthwise = fields["op"] == OP_DW
    up = depthwise and fields["pool"] == POOL_UPSAMPLE
    counts = {"cg_n": -(-fields["in_c"] // config.pe_in),
              "og_n": -(-fields["out_c"] // config.pe_out),
              "out_cg": -(-fields["out_c"] // config.pe_in)}
    if registers:
        counts = {name: counts[name] & ((1 << width) - 1)
                  for name, width in count_widths(config).items()}
    return {**counts, "wk_h": 1 if depthwise else fields["k_h"],
            "wk_w": 1 if depthwise else fields["k_w"],
            **_kernel_row(fields, counts["cg_n"], 1 if depthwise else fields["k_w"]),
            "w_og": 1 if depthwise else counts["og_n"],
            "fit_h": fields["out_h"] if up else fields["in_h"],
            "fit_w": fields["out_w"] if up else fields["in_w"],
            "fit_pk_h": 1 if up else fields["pool_k_h"],
            "fit_pk_w": 1 if up else fields["pool_k_w"],
            # columns written: an unpooled pair layer's ``out_w`` counts pairs
            "wr_w": fields["out_w"] << (bool(config.pairs and fields.get("pair", 0)
                                             and fields["pool"] == POOL_NONE))}


def _kernel_row(fields: dict, cg_n: int, wk_w: int) -> dict:
    """``kw_skip`` (`MERGE_PRELUDE`), and the items per kernel row and the groups they
    multiply as the kernel terms take them (`_UNMERGED`)."""
    if not fields.get("merge", 0):
        return {"kw_skip": 0, "kk_w": wk_w, "kk_g": cg_n}
    skip = fields["k_w"] >> 1
    return {"kw_skip": skip, "kk_w": wk_w * cg_n - skip, "kk_g": 1}


def count_widths(config: AcceleratorConfig) -> dict:
    """Widths of the sequencer's channel group count registers: what a legal layer needs (a
    count never exceeds the depth of the memory it indexes). A larger count fails that
    memory's check, except an add's output groups (``og_n``), which index no parameters: the
    register keeps their low bits, and the terms they multiply take their cycles from those."""
    mems = memories(config)
    act, params = (bits_for(mems[region].depth) + 1 for region in (ACT, PARAMS))
    return {"cg_n": act, "og_n": params, "out_cg": act}


def depths(config: AcceleratorConfig) -> dict:
    """Memory depths in words (rows) and parameter rows per output channel group."""
    mems = memories(config)
    return {"act_depth": mems[ACT].depth, "weight_depth": mems[WEIGHTS].depth,
            "param_depth": mems[PARAMS].depth,
            "param_rows": config.pe_out // config.requant_parallel,
            "ext_bytes": config.ext_bytes, "psum_depth": config.psum_entries}


def local_bytes(config: AcceleratorConfig) -> dict:
    """Bytes of each on-chip memory a transfer may target, by `MOVE_TARGETS` code."""
    mems = memories(config)
    return {code: mems[region].depth * mems[region].row_bytes
            for code, region in move_regions(config).items()}


def move_regions(config: AcceleratorConfig) -> dict:
    """The host bus region of each transfer target code the configuration has."""
    mems = memories(config)
    return {code: code for code in MOVE_TARGETS.values() if code in mems}


def run(fields: dict, config: AcceleratorConfig) -> tuple[dict, set]:
    """The results and the failed checks of `PROGRAM` for descriptor ``fields`` (which must
    include the word addresses ``in_base``, ``out_base``, ``in2_base``, ``w_base`` and
    ``p_base``)."""
    values = {**fields, **group_counts(fields, config), **depths(config)}
    steps = _steps(fields, config)
    failed = _evaluate(steps, values)
    return {dest: values[dest] for dest in _stored(steps)}, failed


def _evaluate(steps, values: dict) -> set:
    """Runs ``steps`` on ``values`` (results are stored into it); returns the failed
    checks."""
    failed = set()
    for step in steps:
        total = sum(sign * (values[a] if isinstance(a, str) else a)
                    * (values[b] if isinstance(b, str) else b) for sign, a, b in step.terms)
        if isinstance(step, (Size, Sum)):
            values[step.dest] = total
        elif total > 0 or (step.strict and total == 0):
            failed.add(step.error)
    return failed


def _term_cycles(steps, values: dict) -> int:
    return sum(1 + max(1, (values[b] if isinstance(b, str) else b).bit_length())
               for step in steps for _, _, b in step.terms)


def cycles(fields: dict, config: AcceleratorConfig) -> int:
    """Cycles the sequencer spends on `program` for ``fields`` (its group counts as wide as
    their registers, `count_widths`)."""
    values = {**fields, **group_counts(fields, config, registers=True), **depths(config)}
    return _term_cycles(_steps(fields, config), values)


def move_values(fields: dict, config: AcceleratorConfig) -> dict:
    return {**fields, **depths(config),
            "local_bytes": local_bytes(config).get(fields["target"], 0)}


def run_move(fields: dict, config: AcceleratorConfig) -> tuple[int, set]:
    """``m_end`` and the failed checks of `MOVE_PROGRAM` for transfer ``fields``."""
    values = move_values(fields, config)
    failed = _evaluate(MOVE_PROGRAM, values)
    return values["m_end"], failed


def move_cycles(fields: dict, config: AcceleratorConfig) -> int:
    """Cycles the sequencer spends on `MOVE_PROGRAM` for ``fields``."""
    return _term_cycles(MOVE_PROGRAM, move_values(fields, config))
