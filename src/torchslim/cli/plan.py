"""``torchslim plan --model M --data D --max-drop 0.5 --objective size|latency|macs --out DIR``.

Plans per-layer pruning and bit width under an accuracy budget and writes a ready recipe
(``recipe.yaml``, run it with ``torchslim compress``), ``plan.json``, the Pareto plot and the
sensitivity heat map. Under ``torchrun --nproc_per_node=N`` the sensitivity sweep is sharded over
the ranks (gloo); rank 0 searches and writes.
"""

from __future__ import annotations

import argparse
import os


def _ratios(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated fractions, e.g. 0.25,0.5,0.75") from None
    if not out or any(not 0 < r < 1 for r in out):
        raise argparse.ArgumentTypeError(f"{text!r}: every ratio must lie strictly between 0 and 1")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    from torchslim.cli._common import DATA_HELP, MODEL_HELP

    p = sub.add_parser("plan", help="find the best mix of pruning and quantization within an accuracy budget",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--data", "--dataset", dest="dataset", default="fashion-mnist", help=f"{DATA_HELP}; needs a val split")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-drop", type=float, help="the metric loss allowed on the validation split (e.g. 0.5 points)")
    budget.add_argument("--min-value", type=float, help="the metric's floor instead (e.g. 0.97 nearest-neighbour agreement)")
    p.add_argument("--objective", choices=["size", "latency", "macs"], default="size")
    p.add_argument("--metric", default="accuracy", help="accuracy, fidelity, output_error or pkg.module:fn")
    p.add_argument("--key", default=None, help="one figure of the metric, e.g. nn_agreement or mean_cos for fidelity")
    p.add_argument("--minimize", action="store_true", help="the metric is lower-is-better (e.g. output_error)")
    p.add_argument("--out", required=True, help="output folder (refused if it exists, unless --force)")
    p.add_argument("--search", choices=["greedy", "evolve"], default="evolve",
                   help="greedy: sensitivity-guided path only; evolve: then NSGA-II trials seeded with it")  # fmt: skip
    p.add_argument("--trials", type=int, default=16, help="evolutionary trials (each builds and scores a model)")
    p.add_argument("--finalists", type=int, default=3, help="candidates fine-tuned with distillation")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-steps", type=int, default=None, help="cap on optimizer steps per fine-tuning run")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--no-finetune", action="store_true", help="score candidates without fine-tuning")
    p.add_argument("--no-prune", action="store_true", help="plan precision only")
    p.add_argument("--no-quantize", action="store_true", help="plan pruning only")
    p.add_argument("--ratios", type=_ratios, default=(0.25, 0.5, 0.75, 0.9), help="pruning ratios tried per layer")
    p.add_argument("--val-samples", type=int, default=2000, help="validation samples every candidate is scored on")
    p.add_argument("--calibration-samples", type=int, default=512)
    p.add_argument("--cache-dir", default=None, help="sensitivity cache (default ~/.cache/torchslim or $TORCHSLIM_CACHE)")
    p.add_argument("--no-cache", action="store_true", help="recompute the sensitivity sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true")
    from torchslim.cli._common import add_speed_arg

    add_speed_arg(p, "the FP32 input model")
    p.set_defaults(func=run)


def _init_distributed() -> None:
    """Under torchrun (WORLD_SIZE > 1), join the gloo process group the sweep shards over."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        from datetime import timedelta

        dist.init_process_group("gloo", timeout=timedelta(hours=3))  # fine-tuning on rank 0 may take long


def run(args: argparse.Namespace) -> int:
    import torch

    from torchslim.cli._common import metric_arg, print_table, tokenizer_for
    from torchslim.cli.compress import resolve_model
    from torchslim.errors import ConfigError
    from torchslim.io import check_out_dir
    from torchslim.planning import plan

    if args.trials < 0 or args.finalists < 1 or args.val_samples < 1 or args.finetune_epochs < 0:
        raise ConfigError("--trials must be >= 0, --finalists >= 1, --val-samples >= 1 and --finetune-epochs >= 0")
    check_out_dir(args.out, force=args.force, inputs=[args.model.split("@")[-1], args.model, args.dataset])
    _init_distributed()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    quiet = args.quiet or rank != 0
    metric = metric_arg(args)
    model, meta, origin = resolve_model(args.model, args.dataset, quiet)
    finetune = None
    if not args.no_finetune:
        finetune = {"epochs": args.finetune_epochs, "lr": args.finetune_lr, "weight_decay": 0.0005,
                    "distill": {"temperature": 4.0, "alpha": 0.7}}  # fmt: skip
        if args.finetune_steps:
            finetune["max_steps"] = args.finetune_steps
    cache = None if args.no_cache else (args.cache_dir or "default")
    if not quiet:
        print(f"model: {args.model} ({origin})")
    result = plan(
        model, args.dataset, max_drop=args.max_drop, min_value=args.min_value, objective=args.objective, metric=metric,
        key=args.key, minimize=args.minimize, search=args.search, trials=args.trials, ratios=args.ratios,
        prune=not args.no_prune, quantize=not args.no_quantize, finetune=finetune, finalists=args.finalists,
        val_samples=args.val_samples, calibration_samples=args.calibration_samples, cache_dir=cache,
        tokenizer=tokenizer_for(meta), seed=args.seed, quiet=quiet,
    )  # fmt: skip
    if rank != 0:
        return 0
    if args.require_speedup is not None and result.speed is not None:
        result.speed.require(args.require_speedup, what="the planned model")  # before anything is written
    files = result.write(args.out, force=args.force, inputs=[args.model, args.dataset])
    if not args.quiet:
        obj = args.objective
        col = {"size": "size (B)", "macs": "MACs", "latency": "latency (ms)"}[obj]
        shown = [result.baseline, *sorted(result.uniform, key=lambda c: c["cost"]), *result.finalists]
        if result.chosen not in shown:
            shown.append(result.chosen)
        rows = [[("* " if c is result.chosen else "") + c["label"], c["kind"], c["value"], c["drop"],
                 c["cost"] if obj != "latency" else round(c["cost"], 3),
                 f"{result.baseline['cost'] / c['cost']:.2f}x" if c["cost"] else ""] for c in shown]  # fmt: skip
        print_table(f"plan: {obj} within a loss of {result.settings['budget']:g} in validation {result.settings['metric']}",
                    ["candidate", "kind", result.settings["metric"], "drop", col, "vs FP32"], rows)  # fmt: skip
        from torchslim.cli._common import print_speed

        print_speed(result.speed)
        print(f"planned recipe: {os.path.join(args.out, 'recipe.yaml')} (run it: torchslim compress --model {args.model} "
              f"--recipe {os.path.join(args.out, 'recipe.yaml')} --out <folder>); also {', '.join(files[1:])}")  # fmt: skip
    return 0
