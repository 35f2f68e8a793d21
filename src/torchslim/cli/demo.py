"""``torchslim demo``: the main job on a default that needs nothing from the network.

Trains (or reuses the committed) LeNet-5 baseline on Fashion-MNIST, evaluates it, runs the
default recipe ``recipes/demo.yaml`` through ``torchslim compress`` and prints the before/after
table; everything is written to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train or reuse the LeNet-5 baseline, compress it, print and report")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--recipe", default=str(REPO / "recipes" / "demo.yaml"))
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import console, print_table
    from torchslim.io import atomic_dir, write_json
    from torchslim.measure.evaluate import evaluate
    from torchslim.training.baseline import baseline_path, get_baseline

    path = baseline_path(args.model)
    console.print(f"[bold]baseline[/] {args.model}: {'reusing ' + str(path) if path.is_file() else 'training (cached afterwards)'}")
    model, meta = get_baseline(args.model)
    with atomic_dir(args.out, force=args.force) as out:
        base = evaluate(model, checkpoint=path, architecture=args.model, data_dir=args.data_dir)
        rows = [[f"{args.model} FP32", base["accuracy"], base["size_bytes"], 1.0, base["latency_ms_b1"], base["latency_ms_b64"], base["macs"], base["sparsity"]]]
        results = {"baseline": base, "steps": []}
        recipe = Path(args.recipe)
        if recipe.is_file():
            from torchslim.recipes import compress

            res = compress(model, recipe, out=out / "compressed", architecture=args.model, data_dir=args.data_dir, force=True)
            results["steps"] = res.get("steps", []) if isinstance(res, dict) else []
            for st in results["steps"]:
                m = st.get("metrics", {})
                if "accuracy" in m:
                    rows.append([st.get("name", st.get("type")), m["accuracy"], m.get("size_bytes"),
                                 base["size_bytes"] / m["size_bytes"] if m.get("size_bytes") else None,
                                 m.get("latency_ms_b1"), m.get("latency_ms_b64"), m.get("macs"), m.get("sparsity")])  # fmt: skip
        else:
            console.print(f"(no recipe at {recipe}; showing the baseline only)")
        write_json(out / "results.json", results)
        cols = ["model", "accuracy %", "size (bytes)", "compression", "latency b1 (ms)", "latency b64 (ms)", "MACs", "sparsity"]
        md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r) + " |" for r in rows]
        (out / "report.md").write_text(f"# torchslim demo: {args.model} on Fashion-MNIST (test split)\n\n" + "\n".join(md) + "\n")
    print_table(f"torchslim demo: {args.model} on Fashion-MNIST test set", cols, rows)
    console.print(f"report: {Path(args.out) / 'report.md'}")
    return 0
