"""Memory traffic per layer and where each layer sits on the roofline of its configuration.

A layer of a streamed program (`striate.sw.mapping.stream`) reads its input bands, weights and
parameters from external memory and writes its output bands; a layer of a program on chip moves
nothing (the host loads the memories once). Its arithmetic intensity is MACs per byte moved;
with a memory of ``bytes_per_cycle``, it is memory-bound when moving its bytes takes longer than
its MACs at the array's peak (``intensity < macs_per_cycle / bytes_per_cycle``), else
compute-bound. The attainable rate is ``min(peak, intensity * bytes_per_cycle)`` MACs a cycle.
"""

from __future__ import annotations

from pathlib import Path

from .cycles import ideal_cycles


def traffic(program) -> list[tuple[int, int]]:
    """Per layer: (bytes read from, bytes written to) external memory."""
    if program.stream is None:
        return [(0, 0)] * len(program.layers)
    from ..mapping.stream import traffic as stream_traffic
    return stream_traffic(program.stream, len(program.layers))


def rows(program, measured=None) -> list[dict]:
    """Per layer: MACs, bytes read and written, intensity (MACs per byte, None without
    traffic), the cycles its MACs and its bytes take at peak, and what bounds it; with
    ``measured`` cycles per layer, the MACs per cycle it reached."""
    cfg, bw = program.config, program.timing.bytes_per_cycle
    out = []
    for i, (layer, (read, written)) in enumerate(zip(program.layers, traffic(program))):
        moved = read + written
        compute, memory = ideal_cycles(layer, cfg), moved / bw
        row = {"layer": layer.name, "MACs": layer.macs, "read": read, "written": written,
               "intensity": layer.macs / moved if moved else None,
               "compute_cycles": compute, "memory_cycles": memory,
               "bound": "memory" if memory > compute else "compute"}
        if measured is not None:
            row["macs_per_cycle"] = layer.macs / measured[i] if measured[i] else None
        out.append(row)
    return out


def plot(program, table: list, path: Path) -> Path:
    """The roofline of ``program``'s configuration and memory (peak MACs a cycle, bandwidth),
    with each layer that moves bytes at its intensity and reached (or predicted) rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cfg, bw = program.config, program.timing.bytes_per_cycle
    peak = cfg.macs_per_cycle
    points = [r for r in table if r["intensity"] and r.get("macs_per_cycle")]
    lo = min([r["intensity"] for r in points] + [peak / bw / 8])
    hi = max([r["intensity"] for r in points] + [peak / bw * 8])
    xs = [lo * (hi / lo) ** (k / 100) for k in range(101)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [min(peak, x * bw) for x in xs], color="0.2",
            label=f"roof: {peak} MACs/cycle, {bw} bytes/cycle")
    for r in points:
        ax.scatter(r["intensity"], r["macs_per_cycle"], s=14,
                   color="tab:red" if r["bound"] == "memory" else "tab:blue")
        ax.annotate(r["layer"], (r["intensity"], r["macs_per_cycle"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MACs per byte of external memory traffic)")
    ax.set_ylabel("MACs per cycle")
    ax.set_title(f"roofline: {program.metadata.get('model', 'program')} "
                 f"(red: memory-bound, blue: compute-bound)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
