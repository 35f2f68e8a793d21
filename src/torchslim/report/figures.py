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


_PLAN_UNIT = {"size": ("file size (KiB)", 1 / 1024), "macs": ("MMACs per sample", 1e-6), "latency": ("latency (ms)", 1.0)}


def plan_pareto(plan: dict[str, Any]) -> Figure:
    """The planner's candidates: validation metric against the objective, the searched Pareto front,
    the uniform configurations for comparison, the fine-tuned finalists, the plan and the budget."""
    st, cands, base, chosen = plan["settings"], plan["candidates"], plan["baseline"], plan["chosen"]
    label, scale = _PLAN_UNIT[st["objective"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    searched = [c for c in cands if c["kind"] in ("greedy", "evolve")]
    if searched:
        ax.scatter([c["cost"] * scale for c in searched], [c["value"] for c in searched], s=14, color="0.7",
                   label="searched (before fine-tuning)")  # fmt: skip
        front = sorted((c for c in searched if c.get("on_front")), key=lambda c: c["cost"])
        ax.plot([c["cost"] * scale for c in front], [c["value"] for c in front], color="0.4", lw=1, ls="--",
                label="searched Pareto front")  # fmt: skip
    uni = sorted((c for c in cands if c["kind"] == "uniform"), key=lambda c: c["cost"])
    if uni:
        ax.scatter([c["cost"] * scale for c in uni], [c["value"] for c in uni], marker="s", s=28, color="tab:orange",
                   label="uniform configurations")  # fmt: skip
        for c in uni:
            ax.annotate(c["label"].removeprefix("uniform "), (c["cost"] * scale, c["value"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    tuned = [c for c in cands if c["kind"] == "finetuned"]
    if tuned:
        ax.scatter([c["cost"] * scale for c in tuned], [c["value"] for c in tuned], marker="^", s=40, color="tab:blue",
                   label="fine-tuned finalists")  # fmt: skip
    ax.scatter([base["cost"] * scale], [base["value"]], marker="o", s=50, color="black", label="FP32 input model")
    ax.scatter([chosen["cost"] * scale], [chosen["value"]], marker="*", s=160, color="tab:green", label="planned", zorder=5)
    budget = st["budget"]
    floor = base["value"] - budget if st["higher_is_better"] else base["value"] + budget
    ax.axhline(floor, color="tab:red", lw=0.8, ls=":", label="budget")
    values = [c["value"] for c in cands] + [base["value"]]
    # the region that matters (a few budgets around the floor), not squashed by far-off candidates
    near = [v for v in values if abs(v - floor) <= 6 * budget] or values
    lo, hi = min(near), max(near)
    pad = max(hi - lo, budget) * 0.1 or 0.1
    ax.set_ylim(lo - pad, hi + pad)
    hidden = sum(1 for v in values if not lo - pad <= v <= hi + pad)
    if hidden:
        ax.text(0.01, 0.01, f"{hidden} candidates far outside the budget are off the axis (plan.json lists all)",
                transform=ax.transAxes, fontsize=7, color="0.4")  # fmt: skip
    ax.set_xlabel(label)
    ax.set_ylabel(f"validation {st['metric']}" + (f" ({st['key']})" if st["key"] != "value" else ""))
    ax.set_title(f"plan: objective {st['objective']}, budget {budget:.3g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def plan_sensitivity(sens: dict[str, Any]) -> Figure:
    """Heat map of the validation drop when one layer alone is pruned or quantized."""
    import numpy as np

    table: dict[str, dict[str, float | None]] = {}
    for e in sens["entries"]:
        prec = "float" if e["bits"] == 32 else f"int{e['bits']}"
        option = prec if not e["prune"] else f"{prec}, {e['prune']:.0%} pruned"
        table.setdefault(e["layer"], {})[option] = e["drop"]
    layers = list(table)
    options = sorted({o for row in table.values() for o in row}, key=lambda o: ("pruned" in o, o))
    grid = np.full((max(1, len(layers)), max(1, len(options))), np.nan)
    for i, layer in enumerate(layers):
        for j, o in enumerate(options):
            v = table[layer].get(o)
            if v is not None:
                grid[i, j] = v
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(options), 1.2 + 0.28 * len(layers)))
    im = ax.imshow(grid, aspect="auto", cmap="magma_r")
    ax.set_xticks(range(len(options)), options, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    fig.colorbar(im, ax=ax, label=f"{sens['metric']} drop (validation)")
    ax.set_title("sensitivity: one layer changed at a time (blank: does not apply)", fontsize=8)
    return fig


def all_figures(data: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """``{file stem: (caption, png bytes)}`` for every figure of the report."""
    stages = data["stages"]
    figs = {
        "accuracy_vs_size": ("Accuracy against file size across the steps", to_png(accuracy_vs_size(stages))),
        "layer_sparsity": ("Per-layer sparsity at every stage", to_png(layer_sparsity(stages))),
        "layer_bits": ("Per-layer bit width at every stage", to_png(layer_bits(stages))),
        "weight_histograms": ("Weight histograms before and after", to_png(weight_histograms(data.get("histograms", {})))),
    }
    plan = data.get("plan")
    if plan:  # the recipe came from `torchslim plan`: its search, against the uniform configurations
        figs["plan_pareto"] = ("The plan: validation metric against the objective, uniform configurations for comparison",
                               to_png(plan_pareto(plan)))  # fmt: skip
        figs["plan_sensitivity"] = ("Per-layer sensitivity the plan was guided by", to_png(plan_sensitivity(plan["sensitivity"])))
    return figs
