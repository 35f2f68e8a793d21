"""``torchslim eval CHECKPOINT``: one table of accuracy, size, MACs, latency; ``--json`` too.

With ``--reference`` (the FP32 model) the checkpoint is also timed interleaved with it at batch 64
and 1 (the speed guard, :mod:`torchslim.measure.speed`): the table shows the speed-ups and flags a
slower model with the reasons; ``--require-speedup X`` makes a speed-up below X an error.
"""

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
    p.add_argument("--reference", default=None,
                   help="the FP32 model: timed interleaved with the checkpoint (speed-up rows), and the model "
                        "--metric output_error or fidelity compare with")  # fmt: skip
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--runs", type=int, default=50, help="timed runs per batch size")
    p.add_argument("--json", dest="json_out", default=None, help="also write the figures to this JSON file")
    p.add_argument("--force", action="store_true", help="replace the --json file if it exists")
    from torchslim.cli._common import add_speed_arg

    add_speed_arg(p, "--reference")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torchslim.cli._common import data_arg, metric_arg, print_speed, side_out, speed_rows
    from torchslim.data.protocol import first_input
    from torchslim.errors import ConfigError
    from torchslim.io import write_json
    from torchslim.measure.evaluate import evaluate
    from torchslim.measure.latency import check_runs
    from torchslim.measure.speed import speed_check
    from torchslim.quantization import timed_runtime

    check_runs(args.runs, what="--runs")
    if args.require_speedup is not None and not args.reference:
        raise ConfigError("--require-speedup compares the checkpoint's speed with --reference; give --reference "
                          "FP32_MODEL (the model it was compressed from)")  # fmt: skip
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
    speed = None
    if reference is not None:
        ref_runtime, ref_runtime_name = timed_runtime(reference)
        speed = speed_check(model, reference, first_input(data), runtime=runtime, reference_runtime=ref_runtime,
                            runtime_name=runtime_name, reference_runtime_name=ref_runtime_name, runs=args.runs,
                            threads=args.threads)  # fmt: skip
        res["speed"] = speed.as_dict()
        speed.require(args.require_speedup, what=args.checkpoint)  # before the --json file is written
    rows = [[f"{res['metric']}{' (%)' if res['metric'] == 'accuracy' else ''}", res["value"]]]
    rows += [[label, res[k]] for k, label in ROWS if k in res]
    rows += speed_rows(speed)
    print_table(f"{args.checkpoint} on {args.dataset}/{args.split}", ["metric", "value"], rows)
    print_speed(speed)
    if json_out is not None:
        write_json(json_out, res)
    return 0
