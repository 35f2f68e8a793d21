"""Render a run folder's ``report.json`` into ``report.html`` (PNG plots embedded) and ``report.md``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from torchslim.errors import DataError
from torchslim.io import atomic_path

STAGE_COLUMNS = [
    ("name", "stage"), ("metric_value", "accuracy (%)"), ("size_bytes", "file size (B)"),
    ("compression_ratio", "compression"), ("latency_ms_b1", "latency b1 (ms)"), ("latency_ms_b64", "latency b64 (ms)"),
    ("speedup_b1", "speed-up b1"), ("speedup_b64", "speed-up b64"), ("latency_runtime", "timed as"), ("macs", "MACs"), ("sparsity", "sparsity (%)"), ("wall_s", "step time (s)"),
]  # fmt: skip
BITS_COLUMNS = [
    ("layer", "layer"), ("weights", "#weights"), ("kept_pct", "weights kept (%)"), ("weight_bits", "weight bits"),
    ("weight_bits_huffman", "weight bits (Huffman)"), ("index_bits", "index bits"),
    ("index_bits_huffman", "index bits (Huffman)"), ("filler_pct", "filler zeros (%)"), ("bytes", "bytes"),
    ("compress_rate_pct", "compress rate (%)"),
]  # fmt: skip


def stage_columns(stages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The stage table's columns; the metric column is named after the run's metric."""
    for st in stages:
        st.setdefault("metric_value", st.get("accuracy"))  # reports written before metrics were chosen
    metric = stages[0].get("metric", "accuracy") if stages else "accuracy"
    label = "accuracy (%)" if metric == "accuracy" else str(metric)
    return [(k, label if k == "metric_value" else v) for k, v in STAGE_COLUMNS]


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "n/a"
    if key == "sparsity":
        return f"{100 * v:.1f}"
    if key == "compression_ratio":
        return f"{v:.1f}x"
    if key.startswith("speedup"):
        return f"{v:.2f}x"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def speed_line(data: dict[str, Any]) -> tuple[str, bool] | None:
    """The report's speed guard line (``1.52x faster than FP32 ...`` or ``SLOWER than FP32 ...: reasons``)
    and whether it flags a slower result; None for reports written before the guard."""
    speed = data.get("speed")
    if not isinstance(speed, dict) or "verdict" not in speed:
        return None
    twice = ", measured twice: the faster kept" if speed.get("trials", 1) > 1 else ""
    how = (f"final model timed interleaved with the input model on this machine, {speed.get('runs')} runs per batch "
           f"size{twice}, timed as {speed.get('runtime')} vs {speed.get('reference_runtime')}")  # fmt: skip
    return f"{speed['verdict']} ({how})", bool(speed.get("slower"))


def _rows(items: list[dict[str, Any]], cols: list[tuple[str, str]]) -> list[list[str]]:
    return [[_fmt(k, it.get(k)) for k, _ in cols] for it in items]


def _md_table(items: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(c for _, c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(items, cols)]
    return "\n".join(lines) + "\n"


def _html_table(items: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for _, c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in _rows(items, cols))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _layer_items(stages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    first, last = stages[0], stages[-1]
    after = {r["name"]: r for r in last["layers"]}
    items = []
    for r in first["layers"]:
        a = after.get(r["name"], {})
        items.append({"layer": r["name"], "type_before": r["type"], "type_after": a.get("type"),
                      "numel": r["numel"], "numel_after": a.get("numel"), "sparsity_before": r["sparsity"],
                      "sparsity_after": a.get("sparsity"), "bits_before": r["bits"], "bits_after": a.get("bits")})  # fmt: skip
    cols = [("layer", "layer"), ("type_before", "type before"), ("type_after", "type after"), ("numel", "weights"),
            ("numel_after", "weights after"), ("sparsity_before", "sparsity before"), ("sparsity_after", "sparsity after"),
            ("bits_before", "bits before"), ("bits_after", "bits after")]  # fmt: skip
    return items, cols


def render_report(folder: str | Path) -> list[str]:
    """(Re-)write ``report.html``, ``report.md`` and ``figures/*.png`` from ``folder/report.json``.

    Returns the written file names relative to ``folder``.
    """
    from torchslim.report.figures import all_figures

    folder = Path(folder)
    src = folder / "report.json"
    if not src.is_file():
        raise DataError(f"{folder} has no report.json; is it the output folder of `torchslim compress`?")
    try:
        data = json.loads(src.read_text())
        stages = data["stages"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"{src} is not a torchslim report ({exc})") from exc
    figs = all_figures(data)
    (folder / "figures").mkdir(exist_ok=True)
    written = []
    for stem, (_, png) in figs.items():
        with atomic_path(folder / "figures" / f"{stem}.png") as tmp:
            tmp.write_bytes(png)
        written.append(f"figures/{stem}.png")
    layer_items, layer_cols = _layer_items(stages)
    art = data.get("artifact")
    bits = data.get("bits_table") or []

    md = [f"# {data.get('title', 'torchslim report')}\n", f"Created {data.get('created', '')}.\n"]
    speed = speed_line(data)
    if speed is not None:
        md.append(f"**Speed: {speed[0]}**\n" if speed[1] else f"Speed: {speed[0]}\n")
    if art:
        md.append(f"Artifact `{art['file']}`: {art['size_bytes']:,} bytes on disk, {art['compression_ratio']:.1f}x smaller "
                  f"than the baseline's file; reloaded outputs identical: {art['reload_identical_outputs']}.\n")  # fmt: skip
    md += ["## Stages\n", _md_table(stages, stage_columns(stages)), "## Layers (baseline vs final)\n", _md_table(layer_items, layer_cols)]
    if bits:
        md += ["## Bits per weight and per index (as in Deep Compression's Tables 2 and 3)\n", _md_table(bits, BITS_COLUMNS)]
    md.append("## Figures\n")
    md += [f"![{figs[s][0]}](figures/{s}.png)\n" for s in figs]
    md += ["## Recipe\n", "```json", json.dumps(data.get("recipe", {}), indent=2), "```\n"]
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text("\n".join(md))

    parts = [f"<h1>{html.escape(data.get('title', 'torchslim report'))}</h1>", f"<p>Created {html.escape(str(data.get('created', '')))}.</p>"]
    if speed is not None:
        cls = "speed slower" if speed[1] else "speed"
        parts.append(f'<p class="{cls}"><strong>Speed:</strong> {html.escape(speed[0])}</p>')
    if art:
        parts.append(f"<p>Artifact <code>{html.escape(art['file'])}</code>: {art['size_bytes']:,} bytes on disk, "
                     f"{art['compression_ratio']:.1f}x smaller than the baseline's file; reloaded outputs identical: "
                     f"{art['reload_identical_outputs']}.</p>")  # fmt: skip
    parts += ["<h2>Stages</h2>", _html_table(stages, stage_columns(stages)), "<h2>Layers (baseline vs final)</h2>",
              _html_table(layer_items, layer_cols)]  # fmt: skip
    if bits:
        parts += ["<h2>Bits per weight and per index (as in Deep Compression's Tables 2 and 3)</h2>", _html_table(bits, BITS_COLUMNS)]
    parts.append("<h2>Figures</h2>")
    for stem, (caption, png) in figs.items():
        b64 = base64.b64encode(png).decode()
        parts.append(f'<figure id="{stem}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    parts += ["<h2>Recipe</h2>", f"<pre>{html.escape(json.dumps(data.get('recipe', {}), indent=2))}</pre>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;margin:1em 0;}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;}th{background:#eee;}img{max-width:100%;}"
             ".speed{padding:6px 10px;border-left:4px solid #2a2;}.slower{border-color:#c00;color:#a00;background:#fee;font-weight:bold;}")  # fmt: skip
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.get('title', ''))}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    with atomic_path(folder / "report.html") as tmp:
        tmp.write_text(page)
    return ["report.html", "report.md", *written]
