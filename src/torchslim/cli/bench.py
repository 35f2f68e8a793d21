"""``torchslim bench MODEL [--compare OTHER]``: latency and throughput at fixed threads.

With ``--compare`` the two models run interleaved (a, b, a, b...) in one process and the table
shows the speed ratio, the only speed comparison that survives a noisy shared machine. A static
INT8 CNN is timed as its ``compile_int8`` lowering (``timed_runtime``); the title names the runtime.
"""

from __future__ import annotations

import argparse

MAX_BATCH = 1 << 16  # a batch of random inputs this large already takes gigabytes for a 224x224 model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency/throughput at batch sizes; --compare for a side-by-side ratio")
    from torchslim.cli._common import DATA_HELP, MODEL_HELP

    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", "--dataset", dest="dataset", default=None,
                   help=f"the inputs come from a batch of this {DATA_HELP}; default: random inputs of the shape a "
                        "registered model declares")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST *-ubyte.gz files")
    p.add_argument("--compare", default=None, help="a second checkpoint or model, timed interleaved with the first")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64], help="batch sizes (default 1 64)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", dest="json_out", default=None, help="also write the timings to this JSON file")
    p.add_argument("--force", action="store_true", help="replace the --json file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from torchslim.cli._common import data_arg, load_model_arg, print_table, side_out
    from torchslim.data.protocol import ModelInput, first_input
    from torchslim.errors import ConfigError
    from torchslim.io import write_json
    from torchslim.measure.latency import check_runs, compare_latency, measure_latency, peak_rss_mb
    from torchslim.models import get_entry
    from torchslim.quantization import timed_runtime

    for b in args.batch:
        if not 1 <= b <= MAX_BATCH:
            raise ConfigError(f"--batch sizes must be 1 to {MAX_BATCH:,}, got {b}")
    check_runs(args.runs, args.warmup, what="--runs")
    json_out = side_out(args.json_out, args.force, inputs=[args.model, args.compare, args.dataset])
    model, meta = load_model_arg(args.model)
    if args.dataset is not None:
        example = first_input(data_arg(args, "test", meta))
    else:
        name = meta.get("architecture", {}).get("name")
        try:
            shape = get_entry(name).input_shape if name else None
        except ConfigError:
            shape = None
        if shape is None:
            raise ConfigError(f"{args.model} declares no input shape; pass --data with inputs it takes")
        example = ModelInput((torch.randn(1, *shape),))
    model, runtime = timed_runtime(model)
    other, other_runtime = timed_runtime(load_model_arg(args.compare)[0]) if args.compare else (None, None)
    rows, out = [], []
    for b in args.batch:
        x = example.resized(b).example()
        if other is None:
            s = measure_latency(model, x, runs=args.runs, warmup=args.warmup, threads=args.threads)
            rows.append([b, s.median_ms, s.p10_ms, s.p90_ms, s.throughput])
            out.append({"batch": b, **s.as_dict()})
        else:
            sa, sb, ratio = compare_latency(model, other, x, runs=args.runs, warmup=args.warmup, threads=args.threads)
            rows.append([b, sa.median_ms, sb.median_ms, ratio])
            out.append({"batch": b, "a": sa.as_dict(), "b": sb.as_dict(), "speedup_b_over_a": ratio})
    if other is None:
        print_table(f"{args.model} as {runtime} ({args.threads} threads)", ["batch", "median ms", "p10 ms", "p90 ms",
                                                                          "samples/s"], rows)  # fmt: skip
    else:
        print_table(f"{args.model} as {runtime} vs {args.compare} as {other_runtime} ({args.threads} threads, interleaved)",
                    ["batch", "A median ms", "B median ms", "speed-up B/A"], rows)  # fmt: skip
    if json_out is not None:
        write_json(json_out, {"model": args.model, "runtime": runtime, "compare": args.compare,
                                   "compare_runtime": other_runtime, "threads": args.threads, "rows": out,
                                   "peak_rss_mb": peak_rss_mb()})  # fmt: skip
    return 0
