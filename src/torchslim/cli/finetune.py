"""``torchslim finetune``: recover a compressed checkpoint, optionally distilling from a teacher.

Runs unchanged under ``torchrun --nproc_per_node=N`` (DDP; rank 0 logs and writes files).
"""

from __future__ import annotations

import argparse

from torchslim.cli._common import add_data_args
from torchslim.cli.train import add_train_args, overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a compressed checkpoint (distillation, resume, DDP)")
    p.add_argument("checkpoint", help="the compressed model (.safetensors)")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--teacher", default=None, help="uncompressed checkpoint to distill from")
    p.add_argument("--temperature", type=float, default=None, help="distillation temperature (default 4)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the distillation loss (default 0.7)")
    p.add_argument("--feature", action="append", default=[], help="layer name for feature distillation (repeatable)")
    p.add_argument("--no-keep-sparsity", action="store_true", help="let pruned (zero) weights regrow")
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from torchslim.checkpoint import load_checkpoint, save_checkpoint
    from torchslim.cli._common import print_table
    from torchslim.data import load_dataset
    from torchslim.errors import ConfigError
    from torchslim.measure.accuracy import accuracy
    from torchslim.recovery import FinetuneConfig, finetune
    from torchslim.training.loop import _dist_env

    model, meta = load_checkpoint(args.checkpoint)
    teacher = load_checkpoint(args.teacher)[0] if args.teacher else None
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
    try:
        config = FinetuneConfig(dataset=args.dataset, data_dir=args.data_dir, keep_sparsity=not args.no_keep_sparsity, **fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"bad fine-tuning option {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    new, result = finetune(model, config, teacher=teacher, run_dir=args.run_dir, resume=args.resume, quiet=args.quiet)
    rank, _ = _dist_env()
    if rank != 0:
        return 0
    test_acc = accuracy(new, load_dataset(args.dataset, "test", data_dir=args.data_dir))
    s = result.report.summary
    arch = meta.get("architecture", {})
    extra = {k: v for k, v in meta.items() if k not in ("format", "format_version", "architecture", "structure", "encodings", "versions")}
    extra["finetune"] = {"config": config.model_dump(), "summary": s, "test_accuracy": test_acc, "source": args.checkpoint}
    save_checkpoint(new, args.out, architecture=arch.get("name"), architecture_config=arch.get("config"), meta=extra)
    if not args.quiet:
        print_table("fine-tuning", ["metric", "value"], [
            ["test accuracy (%)", test_acc], ["best val accuracy (%)", s["best_val_accuracy"]],
            ["epochs", s["epochs_run"]], ["processes", s["world_size"]], ["wall (s)", s["wall_s"]],
            ["sparsity", s["sparsity_after"]],
        ])  # fmt: skip
    return 0
