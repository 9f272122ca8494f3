"""The ``striate`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import StriateError


def _load_model(name: str):
    from .. import models
    return models.load(name)


def cmd_compile(args) -> int:
    from .compiler import compile as compile_model
    from .datasets import digits
    model = _load_model(args.model)
    calibration = digits("train")[0][:args.calibration]
    program = compile_model(model, calibration)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    program.save(args.output)
    print(program.summary())
    print(f"wrote {args.output}")
    return 0


def cmd_demo(args) -> int:
    """Compile the committed LeNet and check the int8 golden model on the whole test split."""
    import torch
    from .compiler import compile as compile_model
    from .datasets import digits
    model = _load_model("lenet-digits")
    (xtr, _), (xte, yte) = digits("train"), digits("test")
    start = time.perf_counter()
    program = compile_model(model, xtr[:args.calibration])
    compile_s = time.perf_counter() - start
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(out)
    with torch.no_grad():
        float_pred = model(torch.from_numpy(xte)).argmax(1).numpy()
    yq = program.run_reference(program.quantize_input(xte))
    cfg = program.config
    print(f"striate demo: lenet-digits on the {len(yte)}-image digits test split")
    print(f"accelerator config: {cfg.pe_out}x{cfg.pe_in} PE array ({cfg.macs_per_cycle} MACs/cycle)")
    print(program.summary())
    print(f"program: {out} ({out.stat().st_size:,} bytes), compiled in {compile_s:.2f} s")
    print(f"float accuracy:        {np.mean(float_pred == yte):.4f}")
    print(f"int8 golden accuracy:  {np.mean(yq.argmax(1) == yte):.4f}")
    print(f"float/int8 agreement:  {np.mean(float_pred == yq.argmax(1)):.4f}")
    if args.rtl_images:
        _demo_rtl(program, program.quantize_input(xte[:args.rtl_images]), yte[:args.rtl_images])
    return 0


def _demo_rtl(program, xq, labels) -> None:
    """Run images on the accelerator RTL (Verilator under cocotb) and compare every layer."""
    from ..sim.cocotb_run import run_program
    from .cycles import program_cycles
    print(f"running {len(xq)} images on the RTL (Verilator; the first run builds it) ...",
          flush=True)
    start = time.perf_counter()
    results = run_program(program, xq)
    wall = time.perf_counter() - start
    acts = program.run_reference(xq, return_all=True)
    exact = sum(all(np.array_equal(out, acts[i][n].reshape(out.shape))
                    for i, out in enumerate(r["outputs"]) if out is not None)
                for n, r in enumerate(results))
    rtl_pred = np.array([r["outputs"][-1].reshape(-1).argmax() for r in results])
    cycles = int(results[0]["cycles"])
    macs = sum(layer.macs for layer in program.layers)
    print(f"RTL accuracy:          {np.mean(rtl_pred == labels):.4f} ({len(labels)} images)")
    print(f"bit-exact:             {exact}/{len(results)} images, every layer")
    print(f"cycles/image:          {cycles:,} (model {sum(program_cycles(program)):,}); "
          f"utilization {macs / program.config.macs_per_cycle / cycles:.1%}")
    for layer, c in zip(program.layers, results[0]["layer_cycles"]):
        ideal = layer.macs / program.config.macs_per_cycle
        print(f"  {layer.name:<14} {int(c):>7,} cycles  ideal {ideal:>8,.0f}  "
              f"utilization {ideal / int(c):6.1%}")
    print(f"simulation: {wall:.1f} s for {len(results)} images")


def cmd_train(args) -> int:
    import torch
    from .. import models
    from ..models import lenet_digits
    if args.model != "lenet-digits":
        raise StriateError(f"model must be 'lenet-digits', not {args.model!r}")
    model = lenet_digits.train(log=print)
    out = args.output or models.weights_path(args.model)
    torch.save(model.state_dict(), out)
    print(f"float test accuracy {lenet_digits.accuracy(model):.4f}; weights written to {out}")
    return 0


def cmd_verilog(args) -> int:
    """Write the accelerator's Verilog, lint it and print a generic synthesis report."""
    from ..hw import export
    from .config import AcceleratorConfig
    config = AcceleratorConfig()
    path = export.write_verilog(config, Path(args.output) / f"{export.TOP}.v")
    print(f"wrote {path} ({path.stat().st_size:,} bytes) for {config}")
    if args.lint:
        left = export.lint(path)
        waived = ", ".join(export.LINT_WAIVERS)
        print(f"verilator --lint-only -Wall: {len(left)} warnings (waived: {waived})")
        for line in left[:20]:
            print("  " + line)
        if left:
            return 1
    if args.synth:
        report = export.synth_report(path)
        cells = report["cells"]
        print(f"yosys generic synthesis ({report['report']}):")
        print(f"  cells: {sum(cells.values()):,} ({', '.join(f'{n} {k}' for k, n in sorted(cells.items(), key=lambda kv: -kv[1])[:8])}, ...)")
        print("  multipliers: " + ", ".join(f"{n} x {w}" for w, n in report["multipliers"].items()))
        print(f"  memory bits: {report['memory_bits']:,}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="striate", description="int8 ConvNet accelerator toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="compile the committed LeNet and check it on the test split")
    p.add_argument("-o", "--output", default="build/lenet-digits.stp")
    p.add_argument("--calibration", type=int, default=512, help="calibration images")
    p.add_argument("--rtl-images", type=int, default=100,
                   help="test images to run on the RTL (0: golden model only)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("compile", help="compile a registered model to a program file")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--calibration", type=int, default=512, help="calibration images")
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("train", help="retrain a registered model (reproduces committed weights)")
    p.add_argument("model")
    p.add_argument("-o", "--output")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("verilog", help="write, lint and synthesize the default accelerator")
    p.add_argument("-o", "--output", default="build")
    p.add_argument("--lint", action="store_true", help="run verilator --lint-only -Wall")
    p.add_argument("--synth", action="store_true", help="print a yosys synthesis report")
    p.set_defaults(func=cmd_verilog)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except StriateError as exc:
        print(f"striate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
