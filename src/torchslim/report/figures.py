"""The report's matplotlib figures, drawn from report.json data alone (so reports re-render)."""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def accuracy_vs_size(stages: list[dict[str, Any]]) -> Figure:
    """Accuracy against file size across the steps (size on a log axis), baseline first."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs = [s["size_bytes"] / 1024 for s in stages]
    ys = [s.get("metric_value", s.get("accuracy")) for s in stages]
    metric = stages[0].get("metric", "accuracy")
    ax.plot(xs, ys, "-o", color="#3465a4")
    for s, x, y in zip(stages, xs, ys, strict=True):
        ax.annotate(s["name"], (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("file size (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else f"test {metric}")
    ax.set_title("Accuracy vs size across steps")
    ax.grid(True, alpha=0.3)
    return fig


def _layer_bars(stages: list[dict[str, Any]], key: str, scale: float, ylabel: str, title: str) -> Figure:
    names = [r["name"] for r in stages[0]["layers"]]
    for s in stages[1:]:
        names += [r["name"] for r in s["layers"] if r["name"] not in names]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(names) * max(1, len(stages)) / 2), 4.0))
    width = 0.8 / max(1, len(stages))
    for j, s in enumerate(stages):
        by = {r["name"]: r.get(key) for r in s["layers"]}
        vals = [(by.get(n) or 0.0) * scale for n in names]
        ax.bar([i + j * width for i in range(len(names))], vals, width, label=s["name"])
    ax.set_xticks([i + width * (len(stages) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def layer_sparsity(stages: list[dict[str, Any]]) -> Figure:
    return _layer_bars(stages, "sparsity", 100.0, "zero weights (%)", "Per-layer sparsity")


def layer_bits(stages: list[dict[str, Any]]) -> Figure:
    return _layer_bars(stages, "bits", 1.0, "bits per stored weight", "Per-layer bit width")


def weight_histograms(hists: dict[str, dict[str, Any]]) -> Figure:
    """One panel per layer: weights before (all) and after (non-zeros; zeros counted in the title)."""
    n = max(1, len(hists))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, h) in zip(axes.flat, hists.items(), strict=False):
        edges = h["edges"]
        ax.stairs(h["before"], edges, fill=True, alpha=0.45, label="before", color="#729fcf")
        ax.stairs(h["after"], edges, fill=True, alpha=0.6, label="after (non-zero)", color="#cc0000")
        ax.set_yscale("symlog")
        ax.set_title(f"{name}: {h['after_unique']} distinct non-zero values, {h['after_zeros']:,} zeros", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(hists):]:
        ax.axis("off")
    fig.suptitle("Weight distributions before and after")
    fig.tight_layout()
    return fig


def all_figures(data: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """``{file stem: (caption, png bytes)}`` for every figure of the report."""
    stages = data["stages"]
    return {
        "accuracy_vs_size": ("Accuracy against file size across the steps", to_png(accuracy_vs_size(stages))),
        "layer_sparsity": ("Per-layer sparsity at every stage", to_png(layer_sparsity(stages))),
        "layer_bits": ("Per-layer bit width at every stage", to_png(layer_bits(stages))),
        "weight_histograms": ("Weight histograms before and after", to_png(weight_histograms(data.get("histograms", {})))),
    }
