"""Loading a program file validates everything it reads.

A file whose checksum is valid (rewritten by hand or by another tool) must either load as a
program the compiler could have produced or raise `ProgramFormatError` naming the file and the
field or layer at fault. The helpers below rewrite a saved file's JSON header (and, where a case
needs it, its array blob) and recompute the payload length and checksum.
"""

import dataclasses
import hashlib
import json
import math
import re
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import striate
from striate import ProgramFormatError
from striate.sw.runtime import fileformat
from striate.sw.mapping.descriptor import LayerDescriptor
from striate.sw.runtime.program import Program


def tiny_model():
    """A thin first layer (2 channels, 3x3: unfolded on the host with 4 PE lanes) with average
    pooling; a ReLU and a max pool that stay layers of their own after it (identity
    convolutions on the hardware) before a 1x1 convolution; a ReLU6 after a flatten (its own
    layer too, with a clamp top below 127) and a linear layer."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 1),
                         nn.Flatten(), nn.ReLU6(), nn.Linear(32, 3)).eval()


TINY_CALIBRATION = 50 * np.random.default_rng(0).random((16, 2, 8, 8)).astype(np.float32)


class Branches(nn.Module):
    """A graph: a concatenation of 3 and 4 channels (zero channels after the first on 4
    lanes), read by a convolution and by a residual add (through a copy without the zero
    channels), then a linear layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 4, 1)
        self.c, self.fc = nn.Conv2d(7, 7, 1), nn.Linear(7 * 8 * 8, 5)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), self.b(x)], 1)
        return self.fc(torch.flatten(F.relu(self.c(y) + y), 1))


@pytest.fixture(scope="module")
def programs(lenet_program):
    tiny = tiny_model()
    return {"lenet": lenet_program,
            "tiny": striate.compile(tiny, TINY_CALIBRATION),
            "plain": striate.compile(tiny, TINY_CALIBRATION,
                                     striate.AcceleratorConfig(pe_in=2)),
            "graph": striate.compile(Branches().eval(), TINY_CALIBRATION)}


def test_fixture_programs_cover_the_cases(programs):
    """The programs the cases below edit have the structure the cases rely on."""
    lenet, tiny, plain = programs["lenet"], programs["tiny"], programs["plain"]
    assert lenet.graph.input_im2col == (5, 5, 1, 1, 2, 2)
    assert tiny.graph.input_im2col == (3, 3, 1, 1, 1, 1) and plain.graph.input_im2col == ()
    assert [(l.name, l.pool, l.lo, l.hi < 127) for l in tiny.layers] == [
        ("0", "avg", 0, False), ("3", "none", 0, False), ("4", "max", -128, False),
        ("5", "none", -128, False), ("7", "none", 0, True), ("8", "none", -128, False)]
    assert tiny.layers[5].in_shape == (8, 2, 2) and tiny.graph.output_shape == (3,)
    graph = programs["graph"]
    assert [(l.name, l.op, l.inputs) for l in graph.layers] == [
        ("a", "conv", ("@input",)), ("b", "conv", ("@input",)), ("cat", "concat", ("a", "b")),
        ("c", "conv", ("cat",)), ("cat.dense", "conv", ("cat",)),
        ("add", "add", ("c", "cat.dense")), ("fc", "conv", ("add",))]
    assert graph.layers[0].out_shape[0] == 4 and graph.descriptors[2] is None


def split(data: bytes) -> tuple[dict, bytearray]:
    payload = data[fileformat._HEADER.size:]
    (n,) = struct.unpack_from("<I", payload)
    return json.loads(payload[4:4 + n]), bytearray(payload[4 + n:])


def pack(text: bytes, blob: bytes) -> bytes:
    """A file around header ``text`` and ``blob`` with a correct length and checksum."""
    payload = struct.pack("<I", len(text)) + text + bytes(blob)
    return fileformat._HEADER.pack(fileformat.MAGIC, fileformat.FORMAT_VERSION, 0, len(payload),
                                   hashlib.sha256(payload).digest()) + payload


@pytest.fixture(scope="module")
def saved(programs, tmp_path_factory):
    out = {}
    for name, program in programs.items():
        path = tmp_path_factory.mktemp("saved") / f"{name}.stp"
        program.save(path)
        out[name] = path.read_bytes()
    return out


def write(tmp_path, name, header, blob):
    path = tmp_path / f"{name}.stp"
    path.write_bytes(pack(json.dumps(header).encode(), blob))
    return path


def refused(path, match):
    with pytest.raises(ProgramFormatError, match=match) as info:
        striate.load_program(path)
    assert str(info.value).startswith(f"program file {str(path)!r}"), info.value
    return info.value


# -- edits -------------------------------------------------------------------------------------

def desc(header, i, **fields):
    """Rewrite fields of layer ``i``'s descriptor."""
    entry = header["layers"][i]
    old = LayerDescriptor.from_words(entry["descriptor"])
    entry["descriptor"] = dataclasses.replace(old, **fields).to_words()


def array(header, blob, i, name, change):
    """Apply ``change`` to a copy of layer ``i``'s array ``name`` and store it in ``blob``."""
    spec = header["layers"][i]["arrays"][name]
    values = np.frombuffer(bytes(blob), spec["dtype"], math.prod(spec["shape"]),
                           spec["offset"]).copy()
    change(values)
    blob[spec["offset"]:spec["offset"] + spec["nbytes"]] = values.tobytes()


def setitem(*path_value):
    *path, value = path_value

    def edit(header, blob):
        node = header
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def delitem(*path):
    def edit(header, blob):
        node = header
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def relayout_linear(header, blob):
    """The tiny net's linear layer as the quantizer leaves it, before `passes.lower_flatten`:
    a 1x1 convolution over 32 x 1 x 1 although the layer before it writes 8 x 2 x 2."""
    desc(header, 5, in_c=32, in_h=1, in_w=1, k_h=1, k_w=1)
    header["layers"][5]["arrays"]["weight"]["shape"] = [3, 32, 1, 1]


def shift_arrays(header, blob):
    header["layers"][0]["arrays"]["bias"]["offset"] -= 4


def widen_dtype(header, blob):
    spec = header["layers"][0]["arrays"]["bias"]
    spec["dtype"], spec["shape"] = "<i8", [spec["shape"][0] // 2]


def table_bits(header, blob):
    """The descriptor's table field names a table."""
    from striate.sw.mapping.descriptor import LayerDescriptor
    fields = LayerDescriptor.fields_layout()
    top = sum(bits for name, bits, _ in fields[:[f[0] for f in fields].index("table") + 1]) - 1
    header["layers"][0]["descriptor"][top // 32] |= 1 << (top % 32)


def spare_bits(header, blob):
    """A bit past the descriptor's last field is set."""
    header["layers"][0]["descriptor"][-1] |= 1 << 31


CASES = {
    # scales: finite and > 0
    "nan input scale": ("lenet", setitem("input_scale", math.nan),
                        r"input_scale must be a finite number > 0, not nan"),
    "zero input scale": ("lenet", setitem("input_scale", 0.0), r"input_scale .* not 0\.0"),
    "negative input scale": ("lenet", setitem("input_scale", -0.5), r"input_scale .* not -0\.5"),
    "huge int scale": ("lenet", setitem("input_scale", 10 ** 400), r"input_scale must be a finite"),
    "string scale": ("lenet", setitem("input_scale", "0.1"), r"input_scale .* not '0\.1'"),
    "bool scale": ("lenet", setitem("input_scale", True), r"input_scale .* not True"),
    "infinite out scale": ("lenet", setitem("layers", 1, "out_scale", math.inf),
                           r"layer 'features\.4': out_scale must be a finite number > 0, not inf"),
    "missing out scale": ("lenet", setitem("layers", 0, "out_scale", None),
                          r"layer 'features\.0': out_scale .* not None"),
    # input shape and the host-side unfold
    "input shape of 4": ("lenet", setitem("input_shape", [1, 1, 16, 16]),
                         r"input_shape must be \[C, H, W\], \[C, L\] or \[F\], not "
                         r"\[1, 1, 16, 16\]"),
    "bool in input shape": ("lenet", setitem("input_shape", [1, 16, True]), r"input_shape must"),
    "zero in input shape": ("lenet", setitem("input_shape", [1, 16, 0]), r"input_shape must"),
    "float in input shape": ("lenet", setitem("input_shape", [1.0, 16, 16]), r"input_shape must"),
    "input narrower than layer": (
        "lenet", setitem("input_shape", [1, 16, 15]),
        r"layer 'features\.0': input shape 25x16x16 must be the 25x16x15 that input_im2col "
        r"\[5, 5, 1, 1, 2, 2\] unfolds from a 1x16x15 input"),
    "input with 2 channels": ("lenet", setitem("input_shape", [2, 16, 16]),
                              r"layer 'features\.0' must be a 1x1 convolution over 2x5x5 = 50 "
                              r"channels to read input_im2col"),
    "plain input shape": ("plain", setitem("input_shape", [2, 8, 9]),
                          r"input_shape \[2, 8, 9\] must be layer '0''s input shape 2x8x8"),
    "unfold dropped": ("lenet", setitem("input_im2col", []),
                       r"input_shape \[1, 16, 16\] must be layer 'features\.0''s input shape"),
    "unfold padding changed": ("lenet", setitem("input_im2col", [5, 5, 1, 1, 2, 1]),
                               r"must be the 25x16x14 that input_im2col"),
    "unfold stride changed": ("lenet", setitem("input_im2col", [5, 5, 2, 2, 2, 2]),
                              r"must be the 25x8x8 that input_im2col"),
    "unfold window too wide": ("lenet", setitem("input_im2col", [1, 25, 1, 1, 0, 0]),
                               r"input_im2col \[1, 25, 1, 1, 0, 0\]: the 1x25 window must fit "
                               r"the 1x16x16 input"),
    "unfold of 5": ("lenet", setitem("input_im2col", [5, 5, 1, 1, 2]),
                    r"input_im2col must be \[\] or 6 integers"),
    "unfold zero stride": ("lenet", setitem("input_im2col", [5, 5, 0, 1, 2, 2]),
                           r"input_im2col must be \[\] or 6 integers"),
    "unfold added": ("plain", setitem("input_im2col", [1, 1, 1, 1, 0, 0]),
                     r"layer '0' must be a 1x1 convolution over 2x1x1 = 2 channels"),
    "unfold where the compiler does not": (
        "tiny", lambda h, b: h["config"].update(pe_in=2, depthwise_kernel=0, ext_bytes=0,
                                                act_banks=1),
        r"input_im2col must be \[\] as the compiler derives for a 2x8x8 input and layer '0' on "
        r"this configuration, not \[3, 3, 1, 1, 1, 1\]"),
    # layers chain, output shape
    "linear not lowered": ("tiny", relayout_linear,
                           r"layer '8': input shape 32x1x1 must be layer '7''s output shape 8x2x2"),
    "output of 5": ("lenet", setitem("output_shape", [5]),
                    r"output_shape must be \[10, 1, 1\] or \[10\] \(the last layer's output\), "
                    r"not \[5\]"),
    "output 2x5": ("lenet", setitem("output_shape", [2, 5]), r"output_shape must be"),
    "float output": ("lenet", setitem("output_shape", [10.0]),
                     r"output_shape must be a list of integers >= 1, not \[10\.0\]"),
    # arrays the numerics contract bounds
    "bias overflows": ("lenet", lambda h, b: array(h, b, 2, "bias", lambda v: v.fill(2**31 - 1)),
                       r"layer 'classifier\.2': int32 accumulator may overflow on channel 0"),
    "bias underflows": ("tiny", lambda h, b: array(h, b, 5, "bias",
                                                   lambda v: v.__setitem__(2, -2**31)),
                        r"layer '8': int32 accumulator may overflow on channel 2"),
    "weight -128": ("lenet", lambda h, b: array(h, b, 1, "weight",
                                                lambda v: v.__setitem__(7, -128)),
                    r"layer 'features\.4': weights must be in \[-127, 127\]"),
    "zero multiplier": ("lenet", lambda h, b: array(h, b, 0, "mult", lambda v: v.fill(0)),
                        r"layer 'features\.0': requantization parameters out of range"),
    "negative multiplier": ("lenet", lambda h, b: array(h, b, 0, "mult", lambda v: v.fill(-5)),
                            r"requantization parameters out of range"),
    "shift 63": ("lenet", lambda h, b: array(h, b, 3, "shift", lambda v: v.fill(63)),
                 r"layer 'classifier\.4': requantization parameters out of range"),
    # clamp and pooling fields of the descriptor
    "clamp from 5": ("lenet", lambda h, b: desc(h, 0, act_lo=5),
                     r"layer 'features\.0': clamp \[lo, hi\] must be"),
    "empty clamp": ("lenet", lambda h, b: desc(h, 0, act_lo=0, act_hi=-1), r"clamp \[lo, hi\]"),
    "avg pool multiplier": ("tiny", lambda h, b: desc(h, 0, pool_mult=0),
                            r"layer '0': pool_mult, pool_shift must be in \[1, 2\*\*31\) and "
                            r"\[1, 62\] for average pooling, not \[0, \d+\]"),
    "avg pool shift": ("tiny", lambda h, b: desc(h, 0, pool_shift=63),
                       r"layer '0': pool_mult, pool_shift must be in .* not \[\d+, 63\]"),
    "max pool multiplier": ("lenet", lambda h, b: desc(h, 0, pool_mult=5),
                            r"layer 'features\.0': pool_mult, pool_shift must be \[0, 0\]"),
    "window without pooling": ("lenet", lambda h, b: desc(h, 3, pool_k_h=3),
                               r"layer 'classifier\.4': pool_kernel, pool_stride, pool_padding "
                               r"must be \[\[1, 1\], \[1, 1\], \[0, 0\]\] without pooling, "
                               r"not \[\[3, 1\]"),
    "pool padding": ("lenet", lambda h, b: desc(h, 0, pool_pad_w=2),
                     r"layer 'features\.0': pool_padding must be at most half the 2x2 pool "
                     r"window, not \[0, 2\]"),
    "pool padding size": ("lenet", lambda h, b: desc(h, 0, pool_pad_h=1),
                     r"layer 'features\.0': output shape 16x8x8 must be 16x9x8, what its "
                     r"convolution and max pooling make of 25x16x16"),
    "pooled size": ("lenet", lambda h, b: desc(h, 0, out_h=7),
                    r"layer 'features\.0': output shape 16x7x8 must be 16x8x8"),
    "conv size": ("lenet", lambda h, b: desc(h, 3, out_h=2, conv_h=2),
                  r"layer 'classifier\.4': output shape 10x2x1 must be 10x1x1, what its "
                  r"convolution make"),
    "zero stride": ("lenet", lambda h, b: desc(h, 1, stride_h=0),
                    r"layer 'features\.4': stride must be >= 1 in every dimension, not \[0, 1\]"),
    "unknown op": ("lenet", lambda h, b: desc(h, 0, op=0),
                   r"layer 'features\.0': descriptor op 0 / pool 1 is not a known code"),
    "address moved": ("lenet", lambda h, b: desc(h, 2, in_addr=64),
                      r"layer 'classifier\.2': descriptor field in_addr must be \d+ as the "
                      r"mapper places the layer, not 64"),
    # merged lanes on a layer whose 16 input channels fill their words: the mapper merges none
    "merge set": ("lenet", lambda h, b: desc(h, 1, merge=1),
                  r"layer 'features\.4': descriptor field merge must be 0 as the mapper places "
                  r"the layer, not 1"),
    # JSON types and structure
    "no layers key": ("lenet", delitem("layers"), r"header must have the fields"),
    "extra key": ("lenet", setitem("extra", 1), r"header must have the fields .* not \["),
    "no layers": ("lenet", setitem("layers", []), r"layers must be a non-empty list, not \[\]"),
    "layers object": ("lenet", setitem("layers", {}), r"layers must be a non-empty list"),
    "metadata list": ("lenet", setitem("metadata", [1]), r"metadata must be a JSON object"),
    "config string": ("lenet", setitem("config", "default"), r"config must be a JSON object"),
    "config float": ("lenet", setitem("config", "pe_out", 16.0),
                     r"AcceleratorConfig\.pe_out must be an integer"),
    "config unknown": ("lenet", setitem("config", "pe_rows", 4), r"has no parameters"),
    "name int": ("lenet", setitem("layers", 1, "name", 7),
                 r"layer 1: name must be a string, not 7"),
    "sources int": ("lenet", setitem("layers", 1, "sources", ["features.4", 1]),
                    r"layer 'features\.4': sources must be a list of strings"),
    "sources string": ("lenet", setitem("layers", 1, "sources", "features.4"),
                       r"sources must be a list of strings"),
    "layer list": ("lenet", setitem("layers", 1, []), r"layer 1 must be a JSON object"),
    "layer key missing": ("lenet", delitem("layers", 1, "arrays"),
                          r"layer 1 must have the fields"),
    "descriptor float": ("lenet", setitem("layers", 0, "descriptor", 0, 3.0),
                         r"layer 'features\.0': descriptor must be a list of \d+ integers"),
    "descriptor bool": ("lenet", setitem("layers", 0, "descriptor", 6, False),
                        r"descriptor must be a list"),
    "descriptor word": ("lenet", setitem("layers", 0, "descriptor", 0, 2**32),
                        r"descriptor must be a list"),
    "descriptor short": ("lenet", lambda h, b: h["layers"][0]["descriptor"].pop(),
                         r"descriptor must be a list"),
    "descriptor bits": ("lenet", table_bits, r"layer 'features\.0': arrays must have the "
                                             r"fields .*'table'"),
    "descriptor spare bits": ("lenet", spare_bits, r"layer 'features\.0': descriptor must be "
                                                   r"376 bits of fields with the rest of its "
                                                   r"last word 0"),
    "array missing": ("lenet", delitem("layers", 0, "arrays", "shift"),
                      r"layer 'features\.0': arrays must have the fields"),
    "array dtype": ("lenet", widen_dtype, r"arrays\.bias\.dtype must be '<i4', not '<i8'"),
    "array offset": ("lenet", shift_arrays, r"arrays\.bias\.offset must be 400"),
    "array nbytes": ("lenet", setitem("layers", 0, "arrays", "shift", "nbytes", 15),
                     r"arrays\.shift\.nbytes must be 16"),
    "array shape": ("lenet", setitem("layers", 0, "arrays", "bias", "shape", [16.0]),
                    r"arrays\.bias\.shape must be a list of 1 integers >= 0"),
    "array ndim": ("lenet", setitem("layers", 0, "arrays", "weight", "shape", [16, 25]),
                   r"arrays\.weight\.shape must be a list of 4 integers"),
    "array past blob": ("lenet", lambda h, b: b.__delitem__(slice(-8, None)),
                        r"arrays\.shift of \[10\] <u1 must lie inside the blob"),
    "blob tail": ("lenet", lambda h, b: b.extend(bytes(3)), r"blob must end after the last array"),
}


@pytest.mark.parametrize("case", CASES)
def test_edited_header_is_refused(case, saved, tmp_path):
    name, edit, match = CASES[case]
    header, blob = split(saved[name])
    edit(header, blob)
    refused(write(tmp_path, name, header, blob), match)


@pytest.mark.parametrize("name, index, max_x", [
    ("lenet", 0, 128),      # reads the (unfolded) network input: any int8
    ("lenet", 1, 127),      # reads the output of a layer with a fused ReLU, [0, 127]
    ("tiny", 3, 127),       # reads a ReLU's [0, 127] through a max pool's [-128, 127] layer
    ("tiny", 5, None),      # reads a ReLU6's [0, six]
])
def test_accumulator_bound_is_the_compilers(name, index, max_x, programs, saved, tmp_path):
    """The bound is tight at ``2**31`` with ``max|x|`` as the compiler tracks it: a bias that
    just fits loads, one more is refused."""
    layer = programs[name].layers[index]
    max_x = max_x or programs[name].layers[index - 1].hi
    fan_in, max_w = layer.weight[0].size, int(np.abs(layer.weight[0]).max())
    limit = 2**31 - 1 - fan_in * max_w * max_x
    for bias, fits in ((limit, True), (limit + 1, False)):
        header, blob = split(saved[name])
        array(header, blob, index, "bias", lambda v: v.__setitem__(0, bias))
        path = write(tmp_path, name, header, blob)
        if fits:
            assert striate.load_program(path).layers[index].bias[0] == limit
        else:
            refused(path, rf"layer '{re.escape(layer.name)}': int32 accumulator may overflow on "
                          rf"channel 0: K \* max\|w\| \* max\|x\| \+ \|bias\| = {2**31} must be "
                          rf"< 2\*\*31")


def test_program_the_compiler_would_have_unfolded_is_refused(programs, tmp_path):
    """With 4 PE lanes the compiler unfolds the 2-channel first layer on the host."""
    plain = programs["plain"]
    path = tmp_path / "folded.stp"
    Program(plain.graph, striate.AcceleratorConfig(), plain.metadata).save(path)
    refused(path, r"input_im2col must be \[3, 3, 1, 1, 1, 1\] as the compiler derives for a "
                  r"2x8x8 input and layer '0' on this configuration, not \[\]")


TEXT_CASES = {
    "not utf-8": (b'{"a": "\xff"}', r"header must be UTF-8 JSON"),
    "not json": (b"{", r"header must be UTF-8 JSON"),
    "duplicate key": (b'{"a": 1, "a": 2}', r"header must be UTF-8 JSON \(duplicate key 'a'\)"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, r"header must be UTF-8 JSON"),
    "list header": (b"[]", r"header must be a JSON object, not \[\]"),
    "huge integer": (b'{"input_scale": 1' + b"0" * 5000 + b"}", r"header must be UTF-8 JSON"),
}


@pytest.mark.parametrize("case", TEXT_CASES)
def test_header_that_is_not_json_is_refused(case, saved, tmp_path):
    text, match = TEXT_CASES[case]
    _, blob = split(saved["tiny"])
    path = tmp_path / "t.stp"
    path.write_bytes(pack(text, blob))
    refused(path, match)


def test_header_length_beyond_payload_is_refused(saved, tmp_path):
    data = bytearray(saved["tiny"])
    payload = bytearray(data[fileformat._HEADER.size:])
    payload[:4] = struct.pack("<I", len(payload))
    path = tmp_path / "t.stp"
    path.write_bytes(fileformat._HEADER.pack(fileformat.MAGIC, fileformat.FORMAT_VERSION, 0,
                                             len(payload),
                                             hashlib.sha256(payload).digest()) + payload)
    refused(path, rf"header length must be at most {len(payload) - 4} bytes, "
                  rf"not {len(payload)}")


def test_saved_programs_load_exactly(programs, saved, tmp_path):
    for name, program in programs.items():
        path = tmp_path / f"{name}.stp"
        path.write_bytes(saved[name])
        loaded = striate.load_program(path)
        assert loaded.descriptors == program.descriptors and loaded.config == program.config
        assert loaded.graph.input_im2col == program.graph.input_im2col
        x = np.random.default_rng(1).integers(-128, 128, (4, *program.graph.input_shape),
                                              dtype=np.int8)
        for a, b in zip(loaded.run_reference(x, return_all=True),
                        program.run_reference(x, return_all=True)):
            np.testing.assert_array_equal(a, b)


ACCEPTED = {
    # host-side metadata: any finite positive scale, names, module paths, metadata
    "scale": (setitem("input_scale", 3), lambda p: p.input_scale == 3.0),
    "out scale": (setitem("layers", 2, "out_scale", 1e-30),
                  lambda p: p.layers[2].out_scale == 1e-30),
    "names": (lambda h, b: (setitem("layers", 0, "name", "first")(h, b),
                            setitem("layers", 1, "inputs", ["first"])(h, b)),
              lambda p: p.layers[0].name == "first" and p.layers[1].inputs == ("first",)),
    "output name": (lambda h, b: (setitem("layers", 3, "name", "out")(h, b),
                                  setitem("output", "out")(h, b)),
                    lambda p: p.graph.output == "out"),
    "sources": (setitem("layers", 0, "sources", []), lambda p: p.layers[0].sources == ()),
    "metadata": (setitem("metadata", {"a": [1, None, {"b": 2.5}]}),
                 lambda p: p.metadata == {"a": [1, None, {"b": 2.5}]}),
    "no metadata": (delitem("metadata"), lambda p: p.metadata == {}),   # files before metadata
    "config default": (delitem("config", "pe_out"), lambda p: p.config.pe_out == 16),
    # the output as the last layer's C x H x W map (a network ending in a convolution)
    "output map": (setitem("output_shape", [10, 1, 1]), lambda p: p.graph.output_shape
                   == (10, 1, 1)),
    # a fused ReLU6 with another six
    "relu6": (lambda h, b: desc(h, 1, act_hi=100), lambda p: p.layers[1].hi == 100),
    # the first layer as a 25x1 convolution (padded 12 rows), unfolded on the host to the same
    # 1x1 layer: what the compiler makes of such a model
    "unfold 25x1": (setitem("input_im2col", [25, 1, 1, 1, 12, 0]),
                    lambda p: p.graph.input_im2col == (25, 1, 1, 1, 12, 0)),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_compiler_valid_variations_load(case, saved, tmp_path):
    edit, check = ACCEPTED[case]
    header, blob = split(saved["lenet"])
    edit(header, blob)
    assert check(striate.load_program(write(tmp_path, "v", header, blob)))


# -- random edits ----------------------------------------------------------------------------

SAFETY_NET = re.compile(r"is malformed: \w+(Error|Exception)")


def _paths(node, path=()):
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, path + (i,))


def _new_value(rng, old):
    kinds = [
        lambda: int(rng.integers(-3, 4)), lambda: int(rng.integers(0, 2**32)), lambda: 2**64 + 1,
        lambda: 10**30, lambda: -1, lambda: -(2**40), lambda: float(rng.normal()),
        lambda: math.nan, lambda: math.inf, lambda: -math.inf, lambda: 0.0, lambda: 5e-324,
        lambda: 1e308, lambda: True, lambda: False, lambda: None, lambda: "x", lambda: "",
        lambda: [], lambda: [1, 2, 3], lambda: {}, lambda: {"k": 1}, lambda: str(old),
    ]
    if isinstance(old, int) and not isinstance(old, bool):
        kinds += [lambda: old + 1, lambda: old - 1, lambda: old ^ (1 << int(rng.integers(0, 32))),
                  lambda: float(old), lambda: [old]]
    if isinstance(old, float):
        kinds += [lambda: old * 2, lambda: -old, lambda: int(old)]
    if isinstance(old, list) and old:
        kinds += [lambda: old[:-1], lambda: old + old[-1:], lambda: old[::-1]]
    return kinds[int(rng.integers(len(kinds)))]()


def mutate(header: dict, rng) -> tuple:
    """Apply one random edit to ``header`` in place; return the path it touched. Half the edits
    go to fields outside descriptors and array specs, which would otherwise get few."""
    paths = list(_paths(header))
    if rng.random() < 0.5:
        paths = [p for p in paths if p[2:3] not in (("descriptor",), ("arrays",))]
    path = paths[int(rng.integers(len(paths)))]
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    action = rng.random()
    if action < 0.12:
        del parent[path[-1]]
    elif action < 0.17 and isinstance(parent, dict):
        parent[f"extra{int(rng.integers(3))}"] = 0
    else:
        parent[path[-1]] = _new_value(rng, parent[path[-1]])
    return path


def _judge(original, loaded, path, x):
    """A mutated file that loads must run the original network bit for bit, or one the compiler
    could have produced from the same model with other calibration data or output layout:

    * the output as the last layer's C x H x W map instead of the flat vector (or back);
    * in a descriptor, another clamp (``lo`` -128 or 0, ``0 <= hi <= 127``: a ReLU / ReLU6 with
      another six) or another average pooling scale (``pool_mult`` / ``pool_shift`` in range:
      ``s_in / (kh * kw * s_out)`` depends on calibrated scales the file does not store).

    Changed scales, names, module paths, metadata and absent config parameters (their defaults)
    load too; they do not change the integers, so the outputs are equal. In a graph, the
    inputs of an add or a concatenation may name other tensors of the same shapes (and scales):
    the program of a model wired that way. Anything else that loads is a loader bug."""
    want, got = original.run_reference(x), loaded.run_reference(x)
    if np.array_equal(want, got):
        return
    if path[0] == "layers" and path[2] == "inputs":
        assert original.layers[path[1]].op in ("add", "concat"), path
        return
    if path[0] == "output_shape":
        assert np.array_equal(want.reshape(len(x), -1), got.reshape(len(x), -1)), path
        return
    assert path[0] == "layers" and path[2] == "descriptor", path
    for a, b, da, db in zip(original.layers, loaded.layers, original.descriptors,
                            loaded.descriptors):
        if a.op != "conv":
            continue
        for name in ("weight", "bias", "mult", "shift"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), path
        changed = {f.name for f in dataclasses.fields(da)
                   if getattr(da, f.name) != getattr(db, f.name)}
        allowed = {"act_lo", "act_hi"} | ({"pool_mult", "pool_shift"} if b.pool == "avg"
                                          else set())
        assert changed <= allowed, (path, changed)


@pytest.mark.parametrize("name, count", [("lenet", 300), ("tiny", 300), ("graph", 300)])
def test_random_header_edits_load_validly_or_are_refused(name, count, programs, saved, tmp_path):
    """Every random edit (with a recomputed checksum) raises `ProgramFormatError` from an
    explicit check, never another exception or the decoder's safety net, or loads as a program
    `_judge` accepts."""
    original = programs[name]
    rng = np.random.default_rng(2024)
    x = rng.integers(-128, 128, (4, *original.graph.input_shape), dtype=np.int8)
    outcomes = {"refused": 0, "loaded": 0}
    for _ in range(count):
        header, blob = split(saved[name])
        path = mutate(header, rng)
        file = write(tmp_path, name, header, blob)
        try:
            loaded = striate.load_program(file)
        except ProgramFormatError as exc:
            message = str(exc)
            assert message.startswith(f"program file {str(file)!r}"), message
            assert not SAFETY_NET.search(message), (path, message)
            outcomes["refused"] += 1
            continue
        _judge(original, loaded, path, x)
        outcomes["loaded"] += 1
    assert outcomes["refused"] > count // 2 and outcomes["loaded"] > 0, outcomes
