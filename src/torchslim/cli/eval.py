"""``torchslim eval CHECKPOINT``: one table of accuracy, size, MACs, latency; ``--json`` too."""

from __future__ import annotations

import argparse

from torchslim.cli._common import add_data_args, load_model_arg, print_table

ROWS = [
    ("params", "parameters"), ("nonzero_params", "non-zero parameters"),
    ("sparsity", "sparsity"), ("size_bytes", "file size (bytes)"), ("macs", "MACs per sample"),
    ("latency_ms_b1", "latency batch 1 (ms, median)"), ("latency_ms_b64", "latency batch 64 (ms, median)"),
    ("latency_runtime", "latency timed as"),
    ("throughput_b64", "throughput batch 64 (samples/s)"), ("peak_rss_mb", "peak memory (MiB)"),
]  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    from torchslim.cli._common import MODEL_HELP

    p = sub.add_parser("eval", help="evaluate a model: metric, size, MACs, latency")
    p.add_argument("checkpoint", help=MODEL_HELP)
    add_data_args(p)
    p.add_argument("--reference", default=None, help="the FP32 model, for --metric output_error or fidelity")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--runs", type=int, default=50, help="timed runs per batch size")
    p.add_argument("--json", dest="json_out", default=None, help="also write the figures to this JSON file")
    p.add_argument("--force", action="store_true", help="replace the --json file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torchslim.cli._common import data_arg, metric_arg, side_out
    from torchslim.io import write_json
    from torchslim.measure.evaluate import evaluate
    from torchslim.measure.latency import check_runs
    from torchslim.quantization import timed_runtime

    check_runs(args.runs, what="--runs")
    metric = metric_arg(args)
    json_out = side_out(args.json_out, args.force, inputs=[args.checkpoint, args.reference, args.dataset])
    model, meta = load_model_arg(args.checkpoint)
    reference = load_model_arg(args.reference)[0] if args.reference else None
    data = data_arg(args, args.split, meta)
    is_file = Path(args.checkpoint).is_file()
    arch = meta.get("architecture", {}).get("name")
    runtime, runtime_name = timed_runtime(model)
    res = evaluate(
        model, data, metric=metric, reference=reference, checkpoint=args.checkpoint if is_file else None,
        architecture=arch, latency_runs=args.runs, threads=args.threads, batch_sizes=(1, 64), runtime=runtime,
        runtime_name=runtime_name,
    )  # fmt: skip
    res = {"checkpoint": args.checkpoint, "model": arch, **res, "dataset": args.dataset, "split": args.split}
    rows = [[f"{res['metric']}{' (%)' if res['metric'] == 'accuracy' else ''}", res["value"]]]
    rows += [[label, res[k]] for k, label in ROWS if k in res]
    print_table(f"{args.checkpoint} on {args.dataset}/{args.split}", ["metric", "value"], rows)
    if json_out is not None:
        write_json(json_out, res)
    return 0
