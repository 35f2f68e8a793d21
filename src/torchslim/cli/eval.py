"""``torchslim eval CHECKPOINT``: one table of accuracy, size, MACs, latency; ``--json`` too."""

from __future__ import annotations

import argparse

from torchslim.cli._common import add_data_args, load_model_arg, print_table

ROWS = [
    ("accuracy", "top-1 accuracy (%)"), ("params", "parameters"), ("nonzero_params", "non-zero parameters"),
    ("sparsity", "sparsity"), ("size_bytes", "file size (bytes)"), ("macs", "MACs per sample"),
    ("latency_ms_b1", "latency batch 1 (ms, median)"), ("latency_ms_b64", "latency batch 64 (ms, median)"),
    ("latency_runtime", "latency timed as"),
    ("throughput_b64", "throughput batch 64 (samples/s)"), ("peak_rss_mb", "peak memory (MiB)"),
]  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy, size, MACs, latency")
    p.add_argument("checkpoint", help="a torchslim .safetensors checkpoint (or a model name: random init)")
    add_data_args(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--runs", type=int, default=50, help="timed runs per batch size")
    p.add_argument("--json", dest="json_out", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torchslim.io import write_json
    from torchslim.measure.evaluate import evaluate

    model, meta = load_model_arg(args.checkpoint)
    is_file = Path(args.checkpoint).exists()
    arch = meta.get("architecture", {}).get("name")
    res = evaluate(
        model, dataset=args.dataset, split=args.split, data_dir=args.data_dir,
        checkpoint=args.checkpoint if is_file else None, architecture=arch, latency_runs=args.runs, threads=args.threads,
    )  # fmt: skip
    res = {"checkpoint": args.checkpoint, "model": arch, **res}
    print_table(f"{args.checkpoint} on {args.dataset}/{args.split}", ["metric", "value"], [[label, res[k]] for k, label in ROWS])
    if args.json_out:
        write_json(args.json_out, res)
    return 0
