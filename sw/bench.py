"""``make bench``: cycles, simulator speeds and software speeds on the committed LeNet, and the
cycles of the reference graphs (`striate.models.reference`: MLPerf Tiny ResNet-8, DS-CNN and FC
autoencoder, SqueezeNet-style fire modules, a time-delay net) layer by layer.

Wall-clock figures are reported as ratios or rates measured in one run on a shared machine;
hardware cycle counts are exact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path



def _best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_bench(out: Path, images: int = 360, log=print) -> dict:
    import torch
    from .compiler import compile as compile_model
    from .datasets import digits
    from .parallel import cores
    from .runtime.driver import open as open_device
    from .modelspec import resolve
    spec = resolve("lenet-digits")
    compile_s = _best_of(lambda: compile_model(spec.module, spec.calibration))
    program = compile_model(spec.module, spec.calibration)
    x, _ = digits("test")
    x = x[:images]
    xq = program.quantize_input(x)
    golden_s = _best_of(lambda: program.run_reference(xq), 20)    # short runs: best of 20
    xt = torch.from_numpy(x)
    with torch.no_grad():
        torch_s = _best_of(lambda: spec.module(xt), 20)

    speeds, stats = {}, None
    for backend, n in (("verilator", len(xq)), ("cocotb", 2), ("pysim", 1)):
        with open_device(backend, program.config, instances=1) as dev:   # one core each
            dev.load(program)
            start = time.perf_counter()
            dev.run(program, xq[:n])
            wall = time.perf_counter() - start
            stats = stats or dev.last_run
            speeds[backend] = {"images": n, "wall_s": wall,
                               "cycles_per_s": dev.last_run.cycles * n / wall}
    fastest = max(v["cycles_per_s"] for v in speeds.values())
    with open_device("verilator", program.config) as dev:               # one instance a core
        dev.run(program, xq[:2 * cores()])          # spawns and loads every instance
        start = time.perf_counter()
        dev.run(program, xq)
        split_s = time.perf_counter() - start
    result = {
        "model": "lenet-digits", "config": program.config.to_dict(),
        "layers": [{"name": name, "ideal_cycles": ideal, "measured_cycles": measured,
                    "utilization": _ratio(ideal, measured)}
                   for name, ideal, measured in zip(stats.layer_names, stats.ideal_cycles,
                                                    stats.layer_cycles)],
        "cycles_per_image": stats.cycles, "utilization": stats.utilization["network"],
        "simulators": {k: {**v, "ratio_to_fastest": v["cycles_per_s"] / fastest}
                       for k, v in speeds.items()},
        "test_split_on_verilator_s": speeds["verilator"]["wall_s"],
        "test_split_on_verilator_instances_s": split_s, "cores": cores(),
        "golden_images_per_s": len(xq) / golden_s, "torch_float_images_per_s": len(xq) / torch_s,
        "compile_s": compile_s,
    }
    result["calibration_methods"] = _calibration_methods()
    result["reference_models"] = _reference_models()
    result["grouped_layers"] = _grouped_layers()
    log("reference graphs on the ULX3S's configurations (RTL counters):")
    result["boards"] = board_models(log=log)
    log("networks larger than the chip, streamed from external memory (default configuration):")
    result["large_models"] = large_models(log=log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log(f"striate bench: lenet-digits on {program.config.pe_out}x{program.config.pe_in} "
        f"({program.config.macs_per_cycle} MACs/cycle)")
    log(f"{'layer':<14} {'ideal':>8} {'measured':>9} {'utilization':>12}")
    for row in result["layers"]:
        log(f"{row['name']:<14} {row['ideal_cycles']:>8,.0f} {row['measured_cycles']:>9,} "
            f"{_percent(row['utilization']):>12}")
    log(f"{'network':<14} {sum(r['ideal_cycles'] for r in result['layers']):>8,.0f} "
        f"{stats.cycles:>9,} {stats.utilization['network']:>12.1%}")
    log(f"{'simulator':<10} {'cycles/s':>12} {'vs fastest':>11}")
    for name, v in result["simulators"].items():
        log(f"{name:<10} {v['cycles_per_s']:>12,.0f} {v['ratio_to_fastest']:>11.4f}")
    log(f"whole test split ({len(xq)} images) on verilator: "
        f"{result['test_split_on_verilator_s']:.1f} s on one instance, "
        f"{split_s:.1f} s on {cores()} (one a core; "
        f"{result['test_split_on_verilator_s'] / split_s:.2f} x)")
    log(f"golden model {result['golden_images_per_s']:,.0f} images/s, PyTorch float "
        f"{result['torch_float_images_per_s']:,.0f} images/s "
        f"(ratio {result['golden_images_per_s'] / result['torch_float_images_per_s']:.2f})")
    for model, methods in result["calibration_methods"].items():
        log(f"calibration on {model} ({len(spec.calibration)} training inputs), its test "
            "split:")
        log(f"{'method':<16} {'top-1':>7} {'agrees with float':>18}")
        for name, row in methods.items():
            log(f"{name:<16} {row['top1']:>7.2%} {row['agreement']:>18.2%}")
    for name, rows in result["reference_models"].items():
        _log_layers(log, f"{name} ({REFERENCE_MODELS[name][2]}, random weights)", rows)
    log("grouped 3x3 convolutions on 16 x 16 (RTL counters): as compiled, and whole")
    log(f"{'layer':<46} {'as':>14} {'compiled':>9} {'whole':>7}")
    for row in result["grouped_layers"]:
        log(f"{row['layer']:<46} {row['how']:>14} {row['split']:>9.1%} {row['whole']:>7.1%}")
    log(f"compile: {compile_s:.2f} s; written to {out}")
    return result


REFERENCE_MODELS = {"resnet8": ((3, 32, 32), "resnet8", "MLPerf Tiny reference"),
                    "fc-autoencoder": ((640,), "fc_autoencoder", "MLPerf Tiny reference"),
                    "fire-stack": ((3, 32, 32), "fire_stack", "SqueezeNet fire modules"),
                    "tdnn": ((40, 64), "tdnn", "time-delay net on 40 x 64 signals"),
                    "lenet5": ((1, 32, 32), "lenet5", "LeNet-5 shapes on 32 x 32"),
                    "ds-cnn": ((1, 49, 10), "ds_cnn", "MLPerf Tiny reference")}


def reference_graph(name: str, table=None, batch: int = 16):
    """Graph ``name`` of ``table`` (`REFERENCE_MODELS` by default) with seeded random weights,
    and ``batch`` seeded random inputs to calibrate it on: the same network every run."""
    import numpy as np
    import torch
    from ..models import reference
    shape, builder, _ = (table or REFERENCE_MODELS)[name]
    torch.manual_seed(0)
    model = getattr(reference, builder)()
    return model, np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)


def _calibration_methods() -> dict:
    """Per committed model: `ptq.compare` on its test split, calibrated on 512 training
    inputs."""
    from .. import models
    from .datasets import load
    from .modelspec import resolve
    from .ptq import compare
    results = {}
    for name in models.names():
        spec = resolve(name)
        results[name] = compare(spec.module, spec.calibration, *load(spec.dataset, "test"))
    return results


def _reference_models() -> dict:
    """Per layer of each reference graph on the default configuration: its op, ideal cycles
    (its MACs over the peak) and the cycles the RTL counted for one input (cycle counts do not
    depend on the weights)."""
    from .compiler import compile as compile_model
    from .runtime.driver import open as open_device
    results = {}
    with open_device("verilator") as dev:
        for name in REFERENCE_MODELS:
            model, x = reference_graph(name)
            program = compile_model(model, x)
            dev.run(program, program.quantize_input(x[:1]))
            stats = dev.last_run
            results[name] = [{"name": layer.name, "op": layer.op, "ideal_cycles": ideal,
                              "measured_cycles": measured,
                              "utilization": _ratio(ideal, measured)}
                             for layer, ideal, measured in zip(program.layers,
                                                               stats.ideal_cycles,
                                                               stats.layer_cycles)]
    return results


LARGE_MODELS = {"resnet18": ((3, 224, 224), "resnet18", "ImageNet ResNet-18, 224 x 224"),
                "vgg-cifar": ((3, 32, 32), "vgg_cifar", "VGG-style CIFAR net, full width"),
                "mobilenet-v1-0.25": ((3, 96, 96), "mobilenet_v1", "MobileNetV1 0.25, 96 x 96"),
                "unet": ((3, 64, 64), "unet", "U-Net-style net, 64 x 64, skip concatenations")}
#: The external memory of the acceptance runs: 8 bytes a cycle (the AXI port's full rate) and
#: about the ULX3S SDRAM's 2, both with 100 cycles of first-word latency.
LARGE_TIMINGS = ((100, 8), (100, 2))


def large_models(rtl: bool = True, names=None, log=print) -> dict:
    """Each of `LARGE_MODELS` (random weights) compiled for the default configuration and
    each of `LARGE_TIMINGS`: streamed, its layers' external traffic and roofline bound, the
    cycle model's counters and, with ``rtl``, the fast backend's on one input (every layer
    compared with the golden model) and the simulation's wall time."""
    import numpy as np
    from .compiler import compile as compile_model
    from .config import AcceleratorConfig, MemoryTiming
    from .golden import roofline, timeline
    from .runtime.driver import open as open_device
    results = {}
    for name in names or LARGE_MODELS:
        model, x = reference_graph(name, LARGE_MODELS, batch=4)
        for latency, width in LARGE_TIMINGS:
            timing = MemoryTiming(latency, width)
            start = time.perf_counter()
            program = compile_model(model, x, timing=timing)
            compile_s = time.perf_counter() - start
            predicted = timeline.per_layer(program)
            row = {"model": name, "latency": latency, "bytes_per_cycle": width,
                   "streamed": program.stream is not None, "descriptors": len(program.steps),
                   "compile_s": compile_s, "predicted_cycles": sum(predicted),
                   "ideal_cycles": sum(l.macs for l in program.layers)
                   / AcceleratorConfig().macs_per_cycle}
            measured = None
            if rtl:
                xq = program.quantize_input(x[:1])
                with open_device("verilator", program.config, timing=timing) as dev:
                    start = time.perf_counter()
                    got = dev.run(program, xq, return_all=True)
                    row["simulation_s"] = time.perf_counter() - start
                    stats = dev.last_run
                want = program.run_reference(xq, return_all=True)
                row["bit_exact_layers"] = sum(np.array_equal(a, b.reshape(a.shape))
                                              for a, b in zip(got, want))
                row["layers"] = len(want)
                row["cycles"] = stats.cycles
                row["counters_as_predicted"] = not timeline.mismatch(
                    program, stats.layer_cycles, stats.cycles)
                measured = stats.layer_cycles
            table = roofline.rows(program, measured or predicted)
            row["bytes_moved"] = sum(r["read"] + r["written"] for r in table)
            row["memory_bound_layers"] = [r["layer"] for r in table
                                          if r["bound"] == "memory" and r["MACs"]]
            row["per_layer"] = [{**r, "cycles": c} for r, c in
                                zip(table, measured or predicted)]
            cycles = row.get("cycles", row["predicted_cycles"])
            row["utilization"] = row["ideal_cycles"] / cycles
            results[f"{name}@{width}"] = row
            log(f"{name:<18} {width} B/cycle: {len(program.steps):>5} descriptors, "
                f"{cycles:>11,} cycles ({'RTL' if rtl else 'model'}), utilization "
                f"{row['utilization']:.1%}, {row['bytes_moved'] / 1e6:.1f} MB moved"
                + (f", bit-exact {row['bit_exact_layers']}/{row['layers']} layers, counters "
                   f"{'as predicted' if row['counters_as_predicted'] else 'OFF'}, simulated in "
                   f"{row['simulation_s']:.0f} s" if rtl else ""))
    return results


#: The reference graphs `board_models` runs on the ULX3S's configurations.
BOARD_MODELS = ("resnet8", "ds-cnn")


def board_models(names=BOARD_MODELS, log=print) -> dict:
    """Each of ``names`` (`REFERENCE_MODELS`, random weights) compiled for each ULX3S
    configuration and run once on the board's design on the fast backend
    (`striate.sw.fuzz.open_model`): the cycle counters, every layer compared with the golden
    model, and the inferences per second at the board's clock. Where a
    network does not fit on chip the ``ulx3s-sdram`` build streams it, timed with the fuzzer's
    model of its SDRAM (`striate.sw.fuzz.STREAMED`); a configuration that refuses a network
    records why."""
    import numpy as np
    from .compiler import compile as compile_model
    from .errors import StriateError
    from .fuzz import STREAMED, open_model
    from ..hw.platform.boards import BOARDS
    results = {}
    for board in (BOARDS["ulx3s"], BOARDS["ulx3s-sdram"]):
        config, timing = board.config, STREAMED.get(board.name)
        for name in names:
            model, x = reference_graph(name)
            key = f"{name}@{board.name}"
            try:
                program = compile_model(model, x, config, timing=timing)
            except StriateError as exc:
                results[key] = {"refused": str(exc)}
                log(f"{name:<8} on {board.name:<12} refused: {exc}")
                continue
            xq = program.quantize_input(x[:1])
            with open_model(board.name) as dev:     # the board's design, its part's blocks
                got = dev.run(program, xq, return_all=True)
                stats = dev.last_run
            want = program.run_reference(xq, return_all=True)
            ideal = sum(layer.macs for layer in program.layers) / config.macs_per_cycle
            row = results[key] = {
                "board": board.name, "clock_mhz": board.clock_mhz, "cycles": stats.cycles,
                "streamed": program.stream is not None, "utilization": ideal / stats.cycles,
                "inferences_per_s": board.clock_mhz * 1e6 / stats.cycles,
                "bit_exact_layers": sum(np.array_equal(a, b.reshape(a.shape))
                                        for a, b in zip(got, want)),
                "layers": len(want)}
            log(f"{name:<8} on {board.name:<12} {row['cycles']:>9,} cycles"
                f"{' (streamed)' if row['streamed'] else ''}, utilization "
                f"{row['utilization']:.1%}: {row['inferences_per_s']:,.0f} inferences/s at "
                f"{board.clock_mhz:.4g} MHz, bit-exact {row['bit_exact_layers']}/{row['layers']} "
                "layers")
    return results


GROUPED_LAYERS = ((64, 64, 2, ""), (64, 64, 4, ""), (64, 64, 8, ""), (128, 128, 32, " (ResNeXt)"),
                  (32, 64, 32, " (depth multiplier 2)"))


def _grouped_layers() -> list:
    """Utilisation of each of `GROUPED_LAYERS` (channels in, out, groups) as the compiler
    runs it (`grouped.split_grouped`: parts, or a copy and the depthwise window) and whole (compiled as for a program depth of one,
    which leaves no descriptor for a second part), measured by the RTL counters on one input."""
    import numpy as np
    import torch
    import torch.nn as nn
    from .compiler import compile_graph
    from .config import AcceleratorConfig
    from .runtime.driver import open as open_device
    from .runtime.program import Program
    rows = []
    with open_device("verilator") as dev:
        for c, o, g, note in GROUPED_LAYERS:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(c, o, 3, padding=1, groups=g)).eval()
            x = np.random.default_rng(0).standard_normal((4, c, 16, 16)).astype(np.float32)
            row = {"layer": f"{c} -> {o} channels, {g} groups{note}"}
            for key, depth in (("split", AcceleratorConfig().program_depth), ("whole", 1)):
                graph = compile_graph(model, x, AcceleratorConfig(program_depth=depth))
                program = Program(graph, AcceleratorConfig())
                dev.run(program, program.quantize_input(x[:1]))
                stats = dev.last_run
                row[key] = sum(stats.ideal_cycles) / sum(stats.layer_cycles)
                if key == "split":
                    spread = any(layer.name.endswith(".spread") for layer in program.layers)
                    parts = sum(layer.op == "conv" for layer in program.layers)
                    row["how"] = "copy + window" if spread else f"{parts} parts"
            rows.append(row)
    return rows


def _ratio(ideal: float, measured: int) -> float | None:
    """Utilization of a layer, None for one that takes no cycles (a concatenation)."""
    return ideal / measured if measured else None


def _percent(util: float | None) -> str:
    return "in place" if util is None else f"{util:.1%}"


def _log_layers(log, title: str, rows: list) -> None:
    ideal = sum(r["ideal_cycles"] for r in rows)
    measured = sum(r["measured_cycles"] for r in rows)
    log(f"{title}")
    log(f"{'layer':<18} {'op':<5} {'ideal':>8} {'measured':>9} {'utilization':>12}")
    for row in rows:
        log(f"{row['name']:<18} {row['op']:<5} {row['ideal_cycles']:>8,.0f} "
            f"{row['measured_cycles']:>9,} {_percent(row['utilization']):>12}")
    log(f"{'network':<18} {'':<5} {ideal:>8,.0f} {measured:>9,} {ideal / measured:>12.1%}")
