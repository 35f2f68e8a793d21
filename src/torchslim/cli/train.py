"""``torchslim train``: FP32 baseline training with the one training loop."""

from __future__ import annotations

import argparse

from torchslim.cli._common import add_data_args


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--schedule", choices=["cosine", "step", "constant"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--early-stopping-patience", type=int)
    p.add_argument("--checkpoint-every", dest="checkpoint_every_steps", type=int, help="steps between resumable checkpoints")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--run-dir", default=None, help="folder for resumable checkpoints (last/best.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.safetensors")
    p.add_argument("--quiet", action="store_true")


def overrides(args: argparse.Namespace) -> dict:
    keys = ["epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "seed", "max_steps",
            "early_stopping_patience", "checkpoint_every_steps"]  # fmt: skip
    from torchslim.errors import ConfigError

    out = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if out.get("epochs") == 0:
        raise ConfigError("--epochs 0 trains nothing and would write an untrained model; give 1 or more (or leave it out)")
    if args.resume and args.run_dir is None:
        raise ConfigError("--resume continues from RUN_DIR/last.safetensors: give the run's folder with --run-dir")
    if args.no_augment:
        out["augment"] = False
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an FP32 baseline (seeded, resumable, torchrun-aware)")
    p.add_argument("--model", required=True, help="registered model name (see `torchslim models`)")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors; a .json sidecar is written)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_data_args(p, metric=False)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import checkpoint_out, print_table
    from torchslim.models import get_entry
    from torchslim.training.baseline import default_config, train_baseline

    get_entry(args.model)
    config = default_config(args.model, **overrides(args))  # a bad value is a ConfigError naming the field
    out = checkpoint_out(args.out, args.force)
    _, meta = train_baseline(
        args.model, out, dataset=args.dataset, config=config, data_dir=args.data_dir, run_dir=args.run_dir,
        resume=args.resume, quiet=args.quiet,
    )  # fmt: skip
    m = meta["metrics"]
    from torchslim.training.loop import _dist_env

    if not args.quiet and _dist_env()[0] == 0:
        print_table(f"{args.model} on {args.dataset}", ["metric", "value"],
                    [["test accuracy (%)", m["test_accuracy"]], ["best val accuracy (%)", m["val_accuracy"]],
                     ["best epoch", m["best_epoch"] + 1], ["train wall (s)", meta["run"]["train_wall_s"]]])  # fmt: skip
    return 0
