"""``torchslim inspect MODEL [--data D]``: before any compression, what each layer allows and why not.

One row per layer (type, parameters, MACs, output shape, the methods that can take it), every
reason a method cannot take a layer, and what the whole model allows with the best size and MAC
reductions estimated. ``--data`` gives the example input (its first sample) that MACs, output
shapes and structured channel groups are measured on; without it those are unknown.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from torchslim.cli._common import MODEL_HELP, add_data_args

    p = sub.add_parser("inspect", help="what each layer allows (quantization, pruning) and why not, before compressing")
    p.add_argument("model", help=MODEL_HELP)
    add_data_args(p, default=None, metric=False)
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split whose first sample is the example input")
    p.add_argument("--json", dest="json_out", default=None, help="also write the rows and the summary to this JSON file")
    p.add_argument("--markdown", dest="md_out", default=None, help="also write the report as Markdown to this file")
    p.add_argument("--force", action="store_true", help="replace the --json / --markdown file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import console, data_arg, load_model_arg, print_table, side_out
    from torchslim.io import atomic_path, write_json
    from torchslim.planning.inspect import inspect

    inputs = [args.model, args.dataset]
    json_out = side_out(args.json_out, args.force, inputs=inputs)
    md_out = side_out(args.md_out, args.force, inputs=inputs)
    model, meta = load_model_arg(args.model)
    data = data_arg(args, args.split, meta) if args.dataset else None
    info = inspect(model, data)
    s = info.summary
    keys = list(s["methods"])
    rows = [[r.name or "(model)", r.type, r.params, r.macs if r.macs is not None else "?",
             "x".join(map(str, r.output_shape)) if r.output_shape else "?",
             ", ".join(k for k in keys if k in r.applies) or "-"] for r in info.rows]  # fmt: skip
    where = f" on {args.dataset}/{args.split}" if args.dataset else " (no --data: MACs, shapes and channel groups unknown)"
    print_table(f"inspect {args.model}{where}", ["name", "type", "params", "MACs", "output shape", "applies"], rows)
    console.print("What cannot apply, and why:", style="bold")
    for line in info.cannot_lines() or ["nothing: every method can take every layer"]:
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    console.print("The whole model:", style="bold")
    for line in s["allows"]:
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if json_out is not None:
        write_json(json_out, {"model": args.model, "data": args.dataset, "split": args.split if args.dataset else None,
                              **info.to_dict()})  # fmt: skip
    if md_out is not None:
        with atomic_path(md_out) as tmp:
            tmp.write_text(info.to_markdown())
    return 0
