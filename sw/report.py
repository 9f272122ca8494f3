"""Per-layer report of a program on a device: Markdown and HTML tables and PNG pictures of every
layer's feature maps for one input, computed on the (simulated) hardware."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .golden import roofline
from .golden.cycles import ideal_cycles
from .ir.graph import INPUT, map_shape
from .frontend.float_ref import run_float


def sqnr_db(program, model, x_float) -> list:
    """Per layer: 10 log10(signal / quantization noise) of the dequantized int8 output against
    the float model's tensor at the same point (None where the float graph has no such tensor)."""
    from .compiler import lower
    nodes, x = lower(model, x_float)
    floats = {n.name: o for n, o in zip(nodes, run_float(nodes, x, return_all=True))}
    acts = program.run_reference(program.quantize_input(x), return_all=True)
    result = []
    for layer, act in zip(program.layers, acts):
        ref = floats.get(layer.sources[-1]) if layer.sources else None
        if ref is None or ref.size != act.size:
            result.append(None)
            continue
        err = act.reshape(ref.shape).astype(np.float64) * layer.out_scale - ref
        noise = float(np.sum(err ** 2))
        result.append(float("inf") if noise == 0 else 10 * np.log10(np.sum(ref ** 2) / noise))
    return result


def layer_rows(program, stats, sqnr=None) -> list[dict]:
    """One dict per layer with shapes, work, memory use, cycles and SQNR."""
    rows, plan, cfg = [], program.plan, program.config
    memory = roofline.rows(program)
    for i, layer in enumerate(program.layers):
        (kh, kw), pool = layer.kernel, layer.pool
        if layer.op in ("add", "concat"):
            op = layer.op if layer.op == "add" else "concat (written in place)"
        elif i == 0 and program.graph.input_im2col:     # unfolded on the host
            kh, kw, sh = program.graph.input_im2col[:3]
            op = f"conv {kh}x{kw}/{sh} (unfolded on the host)"
        else:
            op = f"conv {kh}x{kw}/{layer.stride[0]}"
            source = layer.inputs[0]
            channels = map_shape(program.graph.input_shape)[0] if source == INPUT else \
                program.graph.layer(source).out_shape[0]
            if layer.in_shape[0] < channels:      # a part of a split grouped convolution
                first = layer.channel_offset
                op += f" of channels {first}..{first + layer.in_shape[0] - 1}"
        if pool != "none" and layer.op == "conv":
            op += f" + {pool} pool {layer.pool_kernel[0]}x{layer.pool_kernel[1]}"
        measured = stats.layer_cycles[i] if stats else None
        ideal = ideal_cycles(layer, cfg)
        rows.append({
            "layer": layer.name, "modules": ", ".join(layer.sources), "op": op,
            "clamp": f"[{layer.lo}, {layer.hi}]",
            "input": "x".join(map(str, layer.in_shape)), "output": "x".join(map(str, layer.out_shape)),
            "MACs": layer.macs,
            "parameters": int(layer.weight.size + layer.bias.size) if layer.op == "conv" else 0,
            **({"act bytes in/out": f"{plan.act_in[i][1]}/{plan.act_out[i][1]}",
                "weight bytes": plan.weight[i][1]} if plan else
               {"ext bytes read/written": f"{memory[i]['read']}/{memory[i]['written']}",
                "bound": memory[i]["bound"] if layer.op != "concat" else ""}),
            "ideal cycles": round(ideal),
            "measured cycles": measured,
            "utilization": f"{ideal / measured:.1%}" if measured else "",
            "SQNR dB": ("" if sqnr is None or sqnr[i] is None else f"{sqnr[i]:.1f}"),
        })
    return rows


def _markdown(rows) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("" if r[k] is None else f"{r[k]:,}" if isinstance(r[k], int)
                                else str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(rows) -> str:
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(
        f"<td>{'' if r[k] is None else f'{r[k]:,}' if isinstance(r[k], int) else html.escape(str(r[k]))}</td>"
        for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def feature_map_figures(program, x_image, layer_outputs, out_dir: Path, label=None) -> list:
    """Save the input and every layer's int8 outputs for one image as PNG files; return names.

    ``x_image`` is the input (``C x H x W``, float or int8), ``layer_outputs`` are the hardware's
    per-layer outputs for that image (``C x H x W``), ``label`` a caption for the image such as
    ``"digit 3"`` (None: no caption)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    rows = [("input", x_image[0] if x_image.ndim == 3 and len(x_image) == 1 else x_image)] + \
        [(layer.name, out) for layer, out in zip(program.layers, layer_outputs)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.6 * len(rows)))
    for ax, (name, maps) in zip(axes, rows):
        ax.set_axis_off()
        ax.set_title(name, fontsize=9, loc="left")
        if maps.ndim == 2:
            ax.imshow(maps, cmap="gray")
            continue
        c, h, w = maps.shape
        if h * w == 1:
            values = maps.reshape(-1).astype(int)
            inset = ax.inset_axes([0, 0, 1, 1])
            inset.bar(range(len(values)), values, color="0.3")
            inset.set_xticks(range(len(values)) if len(values) <= 16 else [])
            inset.tick_params(labelsize=6)
            continue
        shown = min(c, 16)
        tile = np.full((h, shown * (w + 1)), np.nan)
        for k in range(shown):
            tile[:, k * (w + 1):k * (w + 1) + w] = maps[k]
        ax.imshow(tile, cmap="gray", interpolation="nearest")
    title = "feature maps on the simulated accelerator" + (f" ({label})" if label else "")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_dir / "feature_maps.png", dpi=110)
    plt.close(fig)
    names.append("feature_maps.png")
    for i, (name, maps) in enumerate(rows[1:]):
        c, h, w = maps.shape
        if h * w == 1:
            continue
        cols = min(c, 8)
        grid_rows = -(-c // cols)
        fig, axes = plt.subplots(grid_rows, cols, figsize=(1.2 * cols, 1.2 * grid_rows + 0.4),
                                 squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k < c:
                ax.imshow(maps[k], cmap="gray", interpolation="nearest")
        fig.suptitle(f"layer {i}: {name}  ({c}x{h}x{w}, int8)", fontsize=9)
        fname = f"layer{i}_{name.replace('.', '_')}.png"
        fig.savefig(out_dir / fname, dpi=100)
        plt.close(fig)
        names.append(fname)
    return names


def write_report(program, rows, pictures, out_dir: Path, summary: str) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``."""
    out_dir = Path(out_dir)
    md = [f"# striate report: {program.metadata.get('model', 'program')}", "", summary, "",
          _markdown(rows), ""] + [f"![{p}]({p})" for p in pictures]
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    imgs = "".join(f'<p><img src="{p}" alt="{p}"></p>' for p in pictures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>striate report</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:3px 6px;font-size:13px;text-align:right}"
            "</style></head><body>"
            f"<h1>striate report: {html.escape(program.metadata.get('model', 'program'))}</h1>"
            f"<pre>{html.escape(summary)}</pre>{_html_table(rows)}{imgs}</body></html>")
    (out_dir / "report.html").write_text(page)
    return out_dir / "report.md", out_dir / "report.html"
