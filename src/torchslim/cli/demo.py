"""``torchslim demo``: the main job on a default that needs nothing from the network.

Trains (or reuses the committed) LeNet-5 baseline on Fashion-MNIST, plans its compression for
latency within a 0.5-point accuracy budget on the validation split (``torchslim plan``), runs the
planned recipe through ``torchslim compress``, and prints the before/after table measured on the
test split; the report carries the plan's Pareto plot and sensitivity map, the plan itself is in
``--out``/plan. ``--recipe R.yaml`` runs that recipe instead of planning (``recipes/demo.yaml`` is
Deep Compression step by step, 52x smaller but no faster than FP32).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train or reuse the LeNet-5 baseline, compress it, print and report")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--recipe", default=None, help="run this recipe instead of planning one (e.g. recipes/demo.yaml)")
    p.add_argument("--max-drop", type=float, default=0.5, help="the plan's accuracy budget (points, validation split)")
    p.add_argument("--objective", choices=["size", "latency", "macs"], default="latency")
    p.add_argument("--data-dir", default=None)
    from torchslim.cli._common import add_speed_arg

    add_speed_arg(p, "the FP32 baseline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import console, print_speed, print_table, stage_speedup
    from torchslim.io import check_out_dir
    from torchslim.training.baseline import baseline_path, get_baseline

    out = Path(args.out)
    if not 0 < args.max_drop < 100:
        from torchslim.errors import ConfigError

        raise ConfigError(f"--max-drop {args.max_drop}: give the accuracy points the plan may lose, e.g. 0.5")
    check_out_dir(out, force=args.force, inputs=[args.data_dir, args.recipe])
    path = baseline_path(args.model)
    console.print(f"[bold]baseline[/] {args.model}: {'reusing ' + str(path) if path.is_file() else 'training it now (cached afterwards)'}")
    model, _ = get_baseline(args.model)
    from torchslim.recipes import compress

    planned = None
    recipe: Any = args.recipe
    if recipe is None:
        from torchslim.planning import plan

        console.print(f"[bold]plan[/] {args.objective} within {args.max_drop} accuracy points (validation split)")
        planned = plan(model, "fashion-mnist", max_drop=args.max_drop, objective=args.objective, trials=8, finalists=2,
                       finetune={"epochs": 1, "lr": 0.01, "weight_decay": 0.0005, "max_steps": 200,
                                 "distill": {"temperature": 4.0, "alpha": 0.7}}, cache_dir=None)  # fmt: skip
        recipe = planned.recipe
        console.print(f"planned: {planned.chosen['label']} (validation drop {planned.chosen['drop']:.2f} pt)")
    else:
        console.print(f"[bold]recipe[/] {recipe}")
    res = compress(model, recipe, out=out, force=args.force, architecture=args.model, data_dir=args.data_dir,
                   require_speedup=args.require_speedup)  # fmt: skip
    if planned is not None:  # the plan beside the artifact, and its figures in the report
        _attach_plan(out, planned)
    base = res.stages[0]
    cols = ["step", "accuracy %", "size (bytes)", "compression", "latency b1 (ms)", "latency b64 (ms)",
            "speed-up b1 / b64", "MACs", "sparsity"]  # fmt: skip
    rows = [
        [st["name"], st["metric_value"], st["size_bytes"], base["size_bytes"] / st["size_bytes"], st["latency_ms_b1"],
         st["latency_ms_b64"], stage_speedup(st), st.get("macs"), st["sparsity"]]
        for st in res.stages
    ]  # fmt: skip
    print_table(f"torchslim demo: {args.model} on the Fashion-MNIST test set (10,000 images)", cols, rows)
    if planned is not None:
        final = res.stages[-1]
        ok = (base["metric_value"] - final["metric_value"] <= args.max_drop and final["size_bytes"] < base["size_bytes"]
              and res.speed is not None and not res.speed.slower)  # fmt: skip
        console.print(f"last row vs FP32: {base['metric_value'] - final['metric_value']:+.2f} pt on the test split "
                      f"(budget {args.max_drop}), {base['size_bytes'] / final['size_bytes']:.1f}x smaller"
                      + ("" if ok else " [red](outside what was asked: see the speed line and the report)[/]"))  # fmt: skip
    print_speed(res.speed)
    console.print(f"report: {out / 'report.html'} (also report.md, metrics.json; artifact {out / 'model.safetensors'}"
                  + (f"; the plan: {out / 'plan'}" if planned is not None else "") + ")")
    return 0


def _attach_plan(out: Path, planned: Any) -> None:
    """Write the plan into ``out/plan`` and re-render the report with its figures."""
    import json

    from torchslim.io import write_json
    from torchslim.report import render_report

    planned.write(out / "plan")
    data = json.loads((out / "report.json").read_text())
    data["plan"] = planned.to_dict()
    write_json(out / "report.json", data)
    render_report(out)
