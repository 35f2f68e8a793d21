"""The plan's figures: metric against the objective (Pareto front, uniform configurations drawn
for comparison) and the per-layer sensitivity heat map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchslim.planning.planner import PlanResult
    from torchslim.planning.sensitivity import Sensitivity

_UNIT = {"size": ("file size (KiB)", 1 / 1024), "macs": ("MMACs per sample", 1e-6), "latency": ("latency (ms)", 1.0)}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(result: PlanResult, path: Path) -> None:
    from torchslim.planning.search import pareto

    plt = _plt()
    obj = result.settings["objective"]
    label, scale = _UNIT[obj]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    searched = [c for c in result.candidates if c["kind"] in ("greedy", "evolve")]
    if searched:
        ax.scatter([c["cost"] * scale for c in searched], [c["value"] for c in searched], s=14, color="0.7",
                   label="searched (before fine-tuning)")  # fmt: skip
        front = pareto(searched, "cost", "drop")
        ax.plot([c["cost"] * scale for c in front], [c["value"] for c in front], color="0.4", lw=1, ls="--",
                label="searched Pareto front")  # fmt: skip
    uni = sorted(result.uniform, key=lambda c: c["cost"])
    if uni:
        ax.scatter([c["cost"] * scale for c in uni], [c["value"] for c in uni], marker="s", s=28, color="tab:orange",
                   label="uniform configurations")  # fmt: skip
        for c in uni:
            ax.annotate(c["label"].removeprefix("uniform "), (c["cost"] * scale, c["value"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    tuned = result.finalists
    if tuned:
        ax.scatter([c["cost"] * scale for c in tuned], [c["value"] for c in tuned], marker="^", s=40, color="tab:blue",
                   label="fine-tuned finalists")  # fmt: skip
    b, ch = result.baseline, result.chosen
    ax.scatter([b["cost"] * scale], [b["value"]], marker="o", s=50, color="black", label="FP32 input model")
    ax.scatter([ch["cost"] * scale], [ch["value"]], marker="*", s=160, color="tab:green", label="planned", zorder=5)
    hib = result.settings["higher_is_better"]
    floor = b["value"] - result.settings["budget"] if hib else b["value"] + result.settings["budget"]
    ax.axhline(floor, color="tab:red", lw=0.8, ls=":", label="budget")
    values = [c["value"] for c in result.candidates] + [b["value"]]
    budget = result.settings["budget"]
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
    ax.set_ylabel(f"validation {result.settings['metric']}" + (f" ({result.settings['key']})" if result.settings["key"] != "value" else ""))
    ax.set_title(f"plan: objective {obj}, budget {result.settings['budget']:.3g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sensitivity_heatmap(sens: Sensitivity, path: Path) -> None:
    import numpy as np

    plt = _plt()
    table = sens.table()
    layers = list(table)
    options = sorted({o for row in table.values() for o in row}, key=lambda o: (("pruned" in o), o))
    grid = np.full((len(layers), len(options)), np.nan)
    for i, layer in enumerate(layers):
        for j, o in enumerate(options):
            v = table[layer].get(o)
            if v is not None:
                grid[i, j] = v
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(options), 1.2 + 0.28 * len(layers)))
    im = ax.imshow(grid, aspect="auto", cmap="magma_r")
    ax.set_xticks(range(len(options)), options, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    fig.colorbar(im, ax=ax, label=f"{sens.metric} drop (validation)")
    ax.set_title("sensitivity: one layer changed at a time (blank: does not apply)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
