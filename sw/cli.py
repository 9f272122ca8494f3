"""The ``striate`` command line. User errors print one line and exit with status 2."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .errors import StriateError


def _progress(total: int, what: str):
    from tqdm import tqdm
    bar = tqdm(total=total, desc=what, unit="img", leave=False, file=sys.stderr,
               disable=not sys.stderr.isatty())
    return bar


def simulate(program, backend: str = "verilator", images: int | None = None, log=print,
             data=None, random: int | None = None, program_name: str = "the program",
             **open_options) -> dict:
    """Run ``program`` on ``backend`` (opened with ``open_options``) and compare every layer of
    every input with the golden model. The inputs are those of `modelspec.inputs`: the ``data``
    file (``.npy`` or ``.npz``), else ``random`` random int8 inputs, else the test split of the
    program's data set; ``images`` keeps the first that many. Returns a summary dict; accuracies
    are in it only when the inputs have labels."""
    import torch
    from .runtime.driver import open as open_device
    from .modelspec import float_model, inputs
    given = inputs(program, data, random, images, program_name=program_name)
    xq, x, y = given.xq, given.x, given.y
    start = time.perf_counter()
    device = open_device(backend, program.config, **open_options)
    open_s = time.perf_counter() - start
    bar = _progress(len(xq), f"{backend} simulation")
    start = time.perf_counter()
    with device:
        outs = device.run(program, xq, return_all=True, progress=lambda n: bar.update(1))
        stats = device.last_run
        cycles_simulated, instances = device.simulated_cycles, device.instances_used
    run_s = time.perf_counter() - start
    bar.close()
    golden = program.run_reference(xq, return_all=True)
    exact = np.ones(len(xq), bool)
    mismatches = {}                     # layer name -> inputs on which it differs
    compared = 0
    for layer, got, want in zip(program.layers, outs, golden):
        if got is None:
            continue
        compared += 1
        same = np.array([np.array_equal(g, w.reshape(g.shape)) for g, w in zip(got, want)])
        if not same.all():
            mismatches[layer.name] = int((~same).sum())
        exact &= same
    summary = {"images": len(xq), "backend": backend, "bit_exact": int(exact.sum()),
               "layers_compared": compared, "layers": len(program.layers),
               "mismatches": mismatches, "source": given.source,
               "stats": stats, "open_s": open_s, "run_s": run_s,
               "cycles_per_s": (cycles_simulated / run_s) if cycles_simulated else None,
               "instances": instances,
               "layer_outputs": outs, "x": x, "xq": xq, "y": y}
    if y is not None:
        summary["golden_accuracy"] = float(np.mean(golden[-1].reshape(len(xq), -1).argmax(1) == y))
        summary["rtl_accuracy"] = float(np.mean(outs[-1].reshape(len(xq), -1).argmax(1) == y))
        model = float_model(program) if x is not None else None
        if model is not None:
            with torch.no_grad():
                pred = model(torch.from_numpy(x)).argmax(1).numpy()
            summary["float_accuracy"] = float(np.mean(pred == y))
    return summary


def _layers_compared(s: dict) -> str:
    if s["layers_compared"] == s["layers"]:
        return "every layer"
    return f"{s['layers_compared']} of {s['layers']} layers"


def print_summary(program, s: dict, show_source: bool = False) -> None:
    """Print accuracies (when the inputs have labels), the bit-exact verdict, cycles and
    utilization; ``show_source`` adds a line saying what the inputs were."""
    stats = s["stats"]
    if show_source:
        print(f"inputs:                {s['source']}")
    if "float_accuracy" in s:
        print(f"float accuracy:        {s['float_accuracy']:.4f}")
    if "golden_accuracy" in s:
        print(f"int8 golden accuracy:  {s['golden_accuracy']:.4f}")
        print(f"RTL accuracy:          {s['rtl_accuracy']:.4f} ({s['backend']} backend)")
    backend = "" if "rtl_accuracy" in s else f" ({s['backend']} backend)"
    print(f"bit-exact:             {s['bit_exact']}/{s['images']} images, "
          f"{_layers_compared(s)}{backend}")
    for name, count in s["mismatches"].items():
        print(f"  MISMATCH {name}: differs from the golden model on {count} of {s['images']} "
              "inputs")
    util = stats.utilization
    print(f"cycles/image:          {stats.cycles:,}; utilization {util['network']:.1%} of "
          f"{program.config.macs_per_cycle} MACs/cycle")
    for name, ideal, cyc in zip(stats.layer_names, stats.ideal_cycles, stats.layer_cycles):
        use = f"utilization {util[name]:6.1%}" if name in util else "(written in place)"
        print(f"  {name:<14} {cyc:>8,} cycles  ideal {ideal:>9,.0f}  {use}")
    speed = f", {s['cycles_per_s']:,.0f} simulated cycles/s" if s.get("cycles_per_s") else ""
    if s.get("instances", 1) > 1:
        speed += f" on {s['instances']} simulator instances (one a core)"
    print(f"simulation:            {s['run_s']:.1f} s for {s['images']} images{speed}")


def report(program, summary: dict, out_dir: Path, sqnr_images: int = 100) -> tuple:
    """Write the per-layer report and feature-map pictures of the first simulated input. SQNR
    needs the float model (a registered one) and float inputs."""
    from . import report as rep
    from .modelspec import float_model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = summary["x"]
    model = float_model(program) if x is not None else None
    sqnr = rep.sqnr_db(program, model, x[:sqnr_images]) if model is not None else None
    rows = rep.layer_rows(program, summary["stats"], sqnr)
    first = [None if o is None else o[0].reshape(layer.out_shape)
             for o, layer in zip(summary["layer_outputs"], program.layers)]
    shown = x[0] if x is not None else summary["xq"][0]
    pictures = rep.feature_map_figures(program, shown, first, out_dir,
                                       label=_first_label(program, summary))
    if program.stream is not None:      # external memory traffic: where each layer sits
        from .golden import roofline
        table = roofline.rows(program, summary["stats"].layer_cycles)
        pictures.insert(0, roofline.plot(program, table, out_dir / "roofline.png").name)
    text = (f"{summary['source']} on the {summary['backend']} backend: "
            f"bit-exact {summary['bit_exact']}/{summary['images']} ({_layers_compared(summary)}), "
            f"{summary['stats'].cycles:,} cycles/image, utilization "
            f"{summary['stats'].utilization['network']:.1%}")
    if "rtl_accuracy" in summary:
        text += f", RTL accuracy {summary['rtl_accuracy']:.4f}"
    if sqnr is not None:
        text += f"; SQNR on {min(sqnr_images, len(x))} images"
    return rep.write_report(program, rows, pictures, out_dir, text)


def _first_label(program, summary: dict) -> str | None:
    """``digit 3`` (or ``label 3``) for the first input, None without labels."""
    if summary["y"] is None:
        return None
    kind = "digit" if program.metadata.get("dataset") == "digits" else "label"
    return f"{kind} {int(summary['y'][0])}"


def cmd_compile(args) -> int:
    from .compiler import compile as compile_model
    from .modelspec import resolve
    spec = resolve(args.model, args.calibration, args.calibration_data)
    config = None
    if args.board:
        from ..hw.platform.boards import BOARDS
        config = BOARDS[args.board].config
    program = compile_model(spec.module, spec.calibration, config, args.calibration_method)
    program.metadata.update({"model": spec.name, **({"dataset": spec.dataset}
                                                    if spec.dataset else {})})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    program.save(args.output)
    print(program.summary())
    print(f"wrote {args.output}")
    return 0


def _load(path):
    from .runtime.fileformat import load_program
    return load_program(path)


def _simulate(program, args, backend=None, **open_options) -> dict:
    return simulate(program, backend or args.backend, args.images, data=args.data,
                    random=args.random, program_name=args.program, **open_options)


def _user_inputs(args) -> bool:
    return args.data is not None or args.random is not None


def cmd_simulate(args) -> int:
    program = _load(args.program)
    summary = _simulate(program, args)
    print_summary(program, summary, show_source=_user_inputs(args))
    return 0 if summary["bit_exact"] == summary["images"] else 1


def cmd_run(args) -> int:
    """Run a program on a board over its serial port (see docs/fpga.md)."""
    from ..hw.platform.boards import BAUD, BOARDS
    program = _load(args.program)
    clock_mhz = args.clock_mhz
    if clock_mhz is None:
        boards = [b for b in BOARDS.values() if b.config == program.config]
        if not boards:
            raise StriateError(f"{args.program} was compiled for no board's configuration; "
                               "give the accelerator clock with --clock-mhz")
        clock_mhz = boards[0].clock_mhz
    summary = _simulate(program, args, f"serial:{args.port}", baudrate=args.baud or BAUD,
                        clock_hz=clock_mhz * 1e6)
    print_summary(program, summary, show_source=_user_inputs(args))
    return 0 if summary["bit_exact"] == summary["images"] else 1


def cmd_bitstream(args) -> int:
    """Build a board's bitstream and report.json (see docs/fpga.md)."""
    from ..hw.platform.bitstream import BuildError, TimingError, build
    try:
        report = build(args.board, Path(args.build_dir))
    except TimingError as exc:
        print(f"striate: timing not met: {exc}", file=sys.stderr)
        return 1
    except BuildError as exc:
        print(f"striate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


def cmd_report(args) -> int:
    program = _load(args.program)
    summary = _simulate(program, args)
    md, page = report(program, summary, Path(args.output))
    label = _first_label(program, summary)
    if _user_inputs(args):
        print(f"inputs:                {summary['source']}")
    print(f"bit-exact:             {summary['bit_exact']}/{summary['images']} images, "
          f"{_layers_compared(summary)} ({summary['backend']} backend)")
    print(f"wrote {md} and {page} with the feature maps of "
          + (label if label else "the first input"))
    return 0 if summary["bit_exact"] == summary["images"] else 1


def cmd_demo(args) -> int:
    """Compile a committed model, run its whole test split on the RTL, write the report."""
    from .compiler import compile as compile_model
    from .modelspec import resolve
    from .. import models
    if args.model not in models.names():
        raise StriateError(f"--model must be one of {models.names()}, not {args.model!r}")
    spec = resolve(args.model, args.calibration)
    start = time.perf_counter()
    program = compile_model(spec.module, spec.calibration)
    compile_s = time.perf_counter() - start
    program.metadata.update({"model": spec.name, "dataset": spec.dataset})
    out = Path(args.output or f"build/{spec.name}.stp")
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(out)
    cfg = program.config
    print(f"striate demo: {spec.name}, {cfg.pe_out}x{cfg.pe_in} PE array "
          f"({cfg.macs_per_cycle} MACs/cycle)")
    print(program.summary())
    print(f"program: {out} ({out.stat().st_size:,} bytes), compiled in {compile_s:.2f} s")
    print(f"running {args.images or 'all'} test images on the RTL ({args.backend}; the first run "
          "builds the model) ...", flush=True)
    summary = simulate(program, args.backend, args.images)
    print_summary(program, summary)
    md, page = report(program, summary, Path(args.report))
    print(f"report: {page} (and {md}), feature maps in {Path(args.report) / 'feature_maps.png'}")
    return 0 if summary["bit_exact"] == summary["images"] else 1


def cmd_train(args) -> int:
    import torch
    from .. import models
    if args.model not in models.names():
        raise StriateError(f"model must be one of {models.names()}, not {args.model!r}")
    model = models.train(args.model, log=print)
    out = args.output or models.weights_path(args.model)
    torch.save(model.state_dict(), out)
    print(f"float test accuracy {models.accuracy(args.model, model):.4f}; weights written to "
          f"{out}")
    return 0


def cmd_verilog(args) -> int:
    """Write the accelerator's Verilog, lint it and print a generic synthesis report."""
    from ..hw.platform import export
    from .config import AcceleratorConfig
    config = AcceleratorConfig()
    path = export.write_verilog(config, Path(args.output) / f"{export.TOP}.v")
    print(f"wrote {path} ({path.stat().st_size:,} bytes) for {config}")
    if args.lint:
        left = export.lint(path)
        print(f"verilator --lint-only -Wall: {len(left)} warnings (waived: "
              f"{', '.join(export.LINT_WAIVERS)})")
        for line in left[:20]:
            print("  " + line)
        if left:
            return 1
    if args.synth:
        rep = export.synth_report(path)
        top = sorted(rep["cells"].items(), key=lambda kv: -kv[1])[:8]
        print(f"yosys generic synthesis ({rep['report']}):")
        print(f"  cells: {sum(rep['cells'].values()):,} ("
              + ", ".join(f"{n} {k}" for k, n in top) + ", ...)")
        print("  multipliers: " + ", ".join(f"{n} x {w}" for w, n in rep["multipliers"].items()))
        print(f"  memory bits: {rep['memory_bits']:,}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench
    run_bench(Path(args.output), images=args.images)
    return 0


def cmd_fuzz(args) -> int:
    """Differential fuzzing on the RTL (`striate.sw.fuzz`); exit 1 on any failure."""
    import random
    from . import fuzz
    configs = args.config.split(",") if args.config else list(fuzz.DEFAULT_CONFIGS)
    for name in configs:
        fuzz.config_named(name)             # unknown names fail before anything runs
    if args.case is not None:
        if args.seed is None or len(configs) != 1:
            raise StriateError("--case needs --seed and exactly one --config")
        # the memory model the case is planned for and the part's blocks, as the fuzzing run
        # opened it
        with fuzz.open_model(configs[0]) as device:
            outcome = fuzz.run_case(configs[0], args.seed, args.case, device)
        print("\n".join(["network:"] + [f"  {line}" for line in outcome.recipe]))
        print(outcome.line())
        if outcome.detail:
            print(f"  {outcome.detail}")
        return 1 if outcome.status == "fail" else 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    seconds = args.minutes * 60 if args.minutes is not None else None
    nets = args.nets if args.nets is not None or seconds is not None else 50
    print(f"striate fuzz: seed {seed}, configurations {', '.join(configs)}, "
          + (f"{args.minutes:g} minutes" if seconds is not None else f"{nets} nets each"),
          flush=True)
    summary = fuzz.fuzz(configs, seed, nets=nets, seconds=seconds,
                        log=lambda line: print(line, flush=True))
    print(summary.line())
    return 1 if summary.failures else 0


DATA_HELP = ("Runs the program on its data set's test split (a program compiled from a registered "
             "model or a model file with dataset = 'digits'), or on --data FILE or --random N, "
             "and compares every layer of every input with the golden model. Accuracies are "
             "printed when the inputs have labels. Exit status 1 if any input is not bit-exact.")


def _data_arguments(p) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--data", metavar="FILE",
                       help="inputs: a .npy array N x C x H x W of the program's input shape "
                            "(float: quantized at the program's input scale; int8: used as it "
                            "is), or a .npz file with that array as 'x' and optionally integer "
                            "labels 'y' (N class indices)")
    group.add_argument("--random", type=int, metavar="N",
                       help="N random int8 inputs (uniform in -128..127, seed 0)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="run only the first N inputs (default: all)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="striate", description="int8 ConvNet accelerator toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    backends = ["verilator", "pysim", "cocotb"]
    p = sub.add_parser("demo", help="compile a committed model (default: the LeNet) and run "
                                    "its test split on the RTL")
    p.add_argument("--model", default="lenet-digits",
                   help="a registered model: lenet-digits, dscnn-digits or tdnn-digits")
    p.add_argument("-o", "--output", default=None, help="program file (build/MODEL.stp)")
    p.add_argument("--report", default="build/report")
    p.add_argument("--calibration", type=int, default=512, help="calibration images")
    p.add_argument("--images", type=int, default=None, help="test images (default: all 360)")
    p.add_argument("--backend", choices=backends, default="verilator")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("compile", help="compile a model (registered name or .py file)")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--calibration", type=int, default=512,
                   help="training images a registered model calibrates on (default 512)")
    p.add_argument("--calibration-data", metavar="FILE.npy",
                   help="float N x C x H x W calibration images, instead of the registered "
                        "model's training images or the model file's calibration()")
    p.add_argument("--calibration-method", choices=["minmax", "percentile", "mse"],
                   default="minmax", help="clipping value per tensor: largest magnitude "
                   "(default), 99.99th percentile, or least squared quantization error")
    p.add_argument("--board", choices=["icebreaker", "ulx3s", "ulx3s-sdram"],
                   help="compile for that board's accelerator (default: the default config)")
    p.set_defaults(func=cmd_compile)
    for name, func, text in (("simulate", cmd_simulate, "accuracy, bit-exactness and cycles"),
                             ("report", cmd_report, "per-layer report with feature maps")):
        p = sub.add_parser(name, help=text, description=DATA_HELP)
        p.add_argument("program")
        p.add_argument("--backend", choices=backends, default="verilator")
        _data_arguments(p)
        if name == "report":
            p.add_argument("-o", "--output", default="report")
        p.set_defaults(func=func)
    p = sub.add_parser("run", help="run a program on a board over its serial port")
    p.add_argument("program")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    p.add_argument("--baud", type=int, default=None, help="baud rate (default: the boards')")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="accelerator clock (default: that of the board built for the program)")
    _data_arguments(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("bitstream", help="build a board's bitstream and report.json")
    p.add_argument("board", choices=["icebreaker", "ulx3s", "ulx3s-sdram"])
    p.add_argument("--build-dir", default="build")
    p.set_defaults(func=cmd_bitstream)
    p = sub.add_parser("train", help="retrain a registered model (reproduces committed weights)")
    p.add_argument("model")
    p.add_argument("-o", "--output")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("verilog", help="write, lint and synthesize the default accelerator")
    p.add_argument("-o", "--output", default="build")
    p.add_argument("--lint", action="store_true", help="run verilator --lint-only -Wall")
    p.add_argument("--synth", action="store_true", help="print a yosys synthesis report")
    p.set_defaults(func=cmd_verilog)
    p = sub.add_parser("bench", help="benchmarks: cycles, simulator speeds, golden model speed")
    p.add_argument("-o", "--output", default="build/bench.json")
    p.add_argument("--images", type=int, default=360)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("fuzz", help="differential fuzzing: random networks, golden model vs RTL")
    p.add_argument("--config", help="comma-separated configurations (default: default,small,"
                                    "serial,window,stream,icebreaker,ulx3s,ulx3s-sdram)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: a fresh one)")
    p.add_argument("--minutes", type=float, default=None, help="run for this long")
    p.add_argument("--nets", type=int, default=None, help="networks per configuration")
    p.add_argument("--case", type=int, default=None, help="rerun one case of --seed")
    p.set_defaults(func=cmd_fuzz)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except StriateError as exc:
        print(f"striate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
