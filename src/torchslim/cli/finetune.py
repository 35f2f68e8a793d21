"""``torchslim finetune``: recover a compressed checkpoint, optionally distilling from a teacher.

Runs unchanged under ``torchrun --nproc_per_node=N`` (DDP; rank 0 logs and writes files).
"""

from __future__ import annotations

import argparse

from torchslim.cli._common import add_data_args
from torchslim.cli.train import add_train_args, overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a compressed checkpoint (distillation, resume, DDP)")
    p.add_argument("checkpoint", help="the compressed model (.safetensors, or any model source: see --help of eval)")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists (never an input)")
    p.add_argument("--teacher", default=None, help="uncompressed checkpoint to distill from")
    p.add_argument("--temperature", type=float, default=None, help="distillation temperature (default 4)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the distillation loss (default 0.7)")
    p.add_argument("--feature", action="append", default=[], help="layer name for feature distillation (repeatable)")
    p.add_argument("--no-keep-sparsity", action="store_true", help="let pruned (zero) weights regrow")
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchslim.checkpoint import save_checkpoint
    from torchslim.cli._common import (
        checkpoint_out,
        data_arg,
        load_model_arg,
        metric_arg,
        print_table,
    )
    from torchslim.errors import ConfigError
    from torchslim.measure.metrics import compute_metric
    from torchslim.modes import kept_mode
    from torchslim.recovery import FinetuneConfig, finetune
    from torchslim.training.loop import _dist_env

    out = checkpoint_out(args.out, args.force, inputs=[args.checkpoint, args.teacher])
    metric = metric_arg(args)
    model, meta = load_model_arg(args.checkpoint)
    teacher = load_model_arg(args.teacher)[0] if args.teacher else None
    fields = overrides(args)
    if teacher is not None:
        d = {"features": args.feature}
        if args.temperature is not None:
            d["temperature"] = args.temperature
        if args.alpha is not None:
            d["alpha"] = args.alpha
        fields["distill"] = d
    elif args.feature or args.temperature is not None or args.alpha is not None:
        raise ConfigError("--temperature/--alpha/--feature need --teacher CHECKPOINT to distill from")
    config = FinetuneConfig(dataset=args.dataset, data_dir=args.data_dir, keep_sparsity=not args.no_keep_sparsity, **fields)
    train, val, test = (data_arg(args, split, meta) for split in ("train", "val", "test"))
    new, result = finetune(model, config, teacher=teacher, train_data=train, val_data=val, metric=metric,
                           run_dir=args.run_dir, resume=args.resume, quiet=args.quiet)  # fmt: skip
    rank, _ = _dist_env()
    if rank != 0:
        return 0
    with kept_mode(new):
        new.eval()
        test_acc = compute_metric(new, test, metric)["value"]
    s = result.report.summary
    arch = meta.get("architecture", {})
    extra = {k: v for k, v in meta.items() if k not in ("format", "format_version", "architecture", "structure", "encodings", "versions")}
    # Timings go to the .json sidecar only: the same seed and command give the same checkpoint bytes.
    summary = {k: v for k, v in s.items() if k != "wall_s"}
    extra["finetune"] = {"config": config.model_dump(), "summary": summary, "test_accuracy": test_acc, "source": args.checkpoint}
    save_checkpoint(new, out, architecture=arch.get("name"), architecture_config=arch.get("config"), meta=extra,
                    sidecar_meta={"run": {"finetune_wall_s": round(s["wall_s"], 2)}})  # fmt: skip
    s_metric = "accuracy (%)" if metric == "accuracy" else getattr(metric, "__name__", str(metric))
    if not args.quiet:
        print_table("fine-tuning", ["metric", "value"], [
            [f"test {s_metric}", test_acc], [f"best val {s_metric}", s["best_val_accuracy"]],
            ["epochs", s["epochs_run"]], ["processes", s["world_size"]], ["wall (s)", s["wall_s"]],
            ["sparsity", s["sparsity_after"]],
        ])  # fmt: skip
    return 0
