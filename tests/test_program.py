"""Program file format and layer descriptors."""

import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import striate
from striate import ConfigError, ProgramFormatError
from striate.sw.runtime import fileformat
from striate.sw.mapping.descriptor import DescriptorError, LayerDescriptor


def test_save_load_roundtrip_is_exact(lenet_program, digits_test, tmp_path):
    path = tmp_path / "lenet.stp"
    lenet_program.save(path)
    loaded = striate.load_program(path)
    assert loaded.config == lenet_program.config
    assert loaded.descriptors == lenet_program.descriptors
    assert loaded.input_scale == lenet_program.input_scale
    xq = lenet_program.quantize_input(digits_test[0])
    for a, b in zip(loaded.run_reference(xq, return_all=True),
                    lenet_program.run_reference(xq, return_all=True)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(loaded.layers, lenet_program.layers):
        for name in ("weight", "bias", "mult", "shift"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert (a.name, a.sources, a.out_scale) == (b.name, b.sources, b.out_scale)


@pytest.fixture
def saved(lenet_program, tmp_path):
    path = tmp_path / "p.stp"
    lenet_program.save(path)
    return path, path.read_bytes()


def test_truncated_file_is_refused(saved):
    path, data = saved
    for cut in (10, fileformat._HEADER.size + 5, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ProgramFormatError, match="bad magic|truncated"):
            striate.load_program(path)


def test_every_corrupted_byte_is_refused(saved):
    path, data = saved
    rng = np.random.default_rng(0)
    positions = list(range(fileformat._HEADER.size)) + list(rng.integers(
        fileformat._HEADER.size, len(data), 200))
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(bad))
        with pytest.raises(ProgramFormatError):
            striate.load_program(path)


def test_foreign_and_future_files_are_refused(saved, tmp_path):
    path, data = saved
    foreign = tmp_path / "model.pt"
    foreign.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ProgramFormatError, match="is not a striate program"):
        striate.load_program(foreign)
    future = bytearray(data)
    future[8:10] = (7).to_bytes(2, "little")
    path.write_bytes(bytes(future))
    with pytest.raises(ProgramFormatError, match="format version must be 6, not 7"):
        striate.load_program(path)
    future[8:10] = (1).to_bytes(2, "little")
    path.write_bytes(bytes(future))
    with pytest.raises(ProgramFormatError, match=r"is format version 1 \(chains in two ping-pong "
                                                 r"activation banks\), which this striate no "
                                                 r"longer runs; compile the model again to write "
                                                 r"format version 6"):
        striate.load_program(path)
    future[8:10] = (2).to_bytes(2, "little")
    path.write_bytes(bytes(future))
    with pytest.raises(ProgramFormatError, match=r"is format version 2 \(layer descriptors "
                                                 r"without the wait and stamp bits\)"):
        striate.load_program(path)
    future[8:10] = (3).to_bytes(2, "little")
    path.write_bytes(bytes(future))
    with pytest.raises(ProgramFormatError, match=r"is format version 3 \(layer descriptors "
                                                 r"without the partial-sum bits\)"):
        striate.load_program(path)
    future[8:10] = (4).to_bytes(2, "little")
    path.write_bytes(bytes(future))
    with pytest.raises(ProgramFormatError, match=r"is format version 4 \(layer descriptors "
                                                 r"without the pixel pair bit\)"):
        striate.load_program(path)
    future[8:10] = (5).to_bytes(2, "little")
    path.write_bytes(bytes(future))
    with pytest.raises(ProgramFormatError, match=r"is format version 5 \(layer descriptors "
                                                 r"without the merged-lane bit\)"):
        striate.load_program(path)
    with pytest.raises(ProgramFormatError, match="cannot read program file"):
        striate.load_program(tmp_path / "missing.stp")


def _resign(payload: bytes) -> bytes:
    import hashlib
    return fileformat._HEADER.pack(fileformat.MAGIC, fileformat.FORMAT_VERSION, 0, len(payload),
                                   hashlib.sha256(payload).digest()) + payload


def test_consistent_checksum_but_inconsistent_content_is_refused(lenet_program, saved):
    """A file written by something else with a valid checksum still gets checked."""
    path, _ = saved
    payload = fileformat._encode(lenet_program)
    text_len = int.from_bytes(payload[:4], "little")
    text = payload[4:4 + text_len].decode()
    # Claim a 3x3 kernel for the first layer: its weights no longer match its descriptor.
    import json
    header = json.loads(text)
    words = header["layers"][0]["descriptor"]
    desc = LayerDescriptor.from_words(words)
    header["layers"][0]["descriptor"] = LayerDescriptor(
        **{**desc.__dict__, "k_h": 3, "k_w": 3}).to_words()
    text = json.dumps(header).encode()
    path.write_bytes(_resign(len(text).to_bytes(4, "little") + text + payload[4 + text_len:]))
    with pytest.raises(ProgramFormatError, match="weight must have shape"):
        striate.load_program(path)


def test_save_is_atomic(lenet_program, saved, monkeypatch):
    path, original = saved

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(striate.StriateError,
                       match=f"cannot write program file '{path}': disk full"):
        lenet_program.save(path)
    assert path.read_bytes() == original
    assert os.listdir(path.parent) == [path.name]


DESCRIPTOR_FIELDS = LayerDescriptor.fields_layout()


@st.composite
def descriptors(draw):
    values = {}
    for name, bits, signed in DESCRIPTOR_FIELDS:
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        values[name] = draw(st.integers(lo, hi))
    return LayerDescriptor(**values)


@settings(max_examples=300, deadline=None)
@given(descriptors())
def test_descriptor_words_roundtrip(desc):
    words = desc.to_words()
    assert all(0 <= w < 2**32 for w in words)
    assert LayerDescriptor.from_words(words) == desc


def test_descriptor_packing_order_is_lsb_first():
    words = LayerDescriptor(op=1, wait=1, pool=2, in_c=1).to_words()
    assert words[0] == 0b1_10_0_1_01       # in_c, pool, stamp, wait, op
    assert LayerDescriptor(act_lo=-1).to_int() >> sum(
        b for n, b, _ in DESCRIPTOR_FIELDS[:[n for n, *_ in DESCRIPTOR_FIELDS].index("act_lo")]
    ) & 0xFF == 0xFF


def test_descriptor_field_out_of_range():
    with pytest.raises(DescriptorError, match=re.escape(
            "descriptor field stride_h must be an integer in [0, 7], not 8")):
        LayerDescriptor(stride_h=8)
    with pytest.raises(DescriptorError, match=r"must be 11 words, not 3|must be \d+ words, not 3"):
        LayerDescriptor.from_words([0, 0, 0])


def test_config_validation_and_peak():
    assert striate.AcceleratorConfig(pe_out=4, pe_in=2).macs_per_cycle == 8
    with pytest.raises(ConfigError, match=re.escape(
            "AcceleratorConfig.pe_in must be an integer in [1, 256], not 0")):
        striate.AcceleratorConfig(pe_in=0)
    with pytest.raises(ConfigError, match=re.escape(
            "AcceleratorConfig.mac_stages must be an integer in [0, 2], not 3")):
        striate.AcceleratorConfig(mac_stages=3)
    with pytest.raises(ConfigError, match=re.escape(
            "AcceleratorConfig.round_stages must be an integer in [0, 2], not -1")):
        striate.AcceleratorConfig(round_stages=-1)
    with pytest.raises(ConfigError, match="split_products splits the parallel requantizer's"):
        striate.AcceleratorConfig(pe_out=2, serial_scale_bits=4, split_products=True)
    with pytest.raises(ConfigError, match="pe_out must be a power of two, not 12"):
        striate.AcceleratorConfig(pe_out=12)
    with pytest.raises(ConfigError, match=re.escape(
            "requant_lanes must be a power of two dividing pe_out (16), not 32")):
        striate.AcceleratorConfig(requant_lanes=32)
    assert striate.AcceleratorConfig(requant_lanes=4).requant_parallel == 4
    assert striate.AcceleratorConfig().requant_parallel == 16
    with pytest.raises(ConfigError, match="has no parameters"):
        striate.AcceleratorConfig.from_dict({"pe_rows": 4})


def test_program_for_other_config_differs_only_in_plan(lenet, calibration):
    small = striate.compile(lenet, calibration, striate.AcceleratorConfig(pe_out=2, pe_in=4))
    assert small.config.macs_per_cycle == 8
    assert small.plan.act_in[0][1] == 28 * 16 * 16    # 25 unfolded channels padded to 4 lanes


@pytest.mark.parametrize("seed", range(60))
def test_sequencer_program_passes_every_legal_layer(seed):
    """`derive.PROGRAM` (what the sequencer computes and checks) accepts every layer the compiler
    describes, and its sizes are the plain products."""
    import rtl_cases
    from striate.sw.mapping import derive
    from striate.sw.runtime.program import Program
    config = [striate.AcceleratorConfig(pe_out=4, pe_in=2, max_width=32),
              striate.AcceleratorConfig()][seed % 2]
    graph, _ = rtl_cases.random_chain(seed, layers=3)
    program = Program(graph, config)
    for desc in program.descriptors:
        fields = dict(desc.__dict__, in_base=desc.in_addr // config.pe_in,
                      out_base=desc.out_addr // config.pe_in,
                      in2_base=desc.in2_addr // config.pe_in,
                      w_base=desc.weight_addr // config.macs_per_cycle,
                      p_base=desc.param_addr // config.requant_parallel)
        values, failed = derive.run(fields, config)
        assert failed == set(), desc
        cg_n = -(-desc.in_c // config.pe_in)
        # (with merged lanes odd kernel columns skip the last channel group)
        assert values["kk"] == desc.k_h * (desc.k_w * cg_n - desc.merge * (desc.k_w // 2))
        assert values["hw_in"] == desc.in_h * desc.in_w
        # (a layer in pixel pairs counts pairs of columns in out_w)
        assert values["out_hw"] == desc.out_h * desc.out_w * (2 if desc.pair else 1)
        assert values["step_yw"] == desc.pool_stride_h * desc.stride_h * desc.in_w
        assert values["p_row"] == desc.pad_h * desc.in_w
        # the hardware keeps these in registers only as wide as the limits (derive.limits)
        assert all(values[name] <= bound for name, bound in derive.limits(config).items())
