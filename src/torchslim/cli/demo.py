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
    from torchslim.cli._common import add_speed_arg

    add_speed_arg(p, "the FP32 baseline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import console, print_speed, print_table, stage_speedup
    from torchslim.io import check_out_dir
    from torchslim.training.baseline import baseline_path, get_baseline

    out = Path(args.out)
    check_out_dir(out, force=args.force, inputs=[args.data_dir, args.recipe])
    path = baseline_path(args.model)
    console.print(f"[bold]baseline[/] {args.model}: {'reusing ' + str(path) if path.is_file() else 'training it now (cached afterwards)'}")
    model, _ = get_baseline(args.model)
    from torchslim.recipes import compress

    console.print(f"[bold]recipe[/] {args.recipe}")
    res = compress(model, args.recipe, out=out, force=args.force, architecture=args.model, data_dir=args.data_dir,
                   require_speedup=args.require_speedup)  # fmt: skip
    base = res.stages[0]
    cols = ["step", "accuracy %", "size (bytes)", "compression", "latency b1 (ms)", "latency b64 (ms)",
            "speed-up b1 / b64", "MACs", "sparsity"]  # fmt: skip
    rows = [
        [st["name"], st["metric_value"], st["size_bytes"], base["size_bytes"] / st["size_bytes"], st["latency_ms_b1"],
         st["latency_ms_b64"], stage_speedup(st), st.get("macs"), st["sparsity"]]
        for st in res.stages
    ]  # fmt: skip
    print_table(f"torchslim demo: {args.model} on the Fashion-MNIST test set (10,000 images)", cols, rows)
    print_speed(res.speed)
    console.print(f"report: {out / 'report.html'} (also report.md, metrics.json; artifact {out / 'model.safetensors'})")
    return 0
