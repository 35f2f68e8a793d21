"""``torchslim prune MODEL --method M --out PATH``: pruning, saved as a checkpoint.

One-shot methods need no data (activation-aware ones calibrate on the train split); gradual and
iterative pruning fine-tune on the data set's train split and pick the best epoch on val.

Masks are made permanent before saving, so the checkpoint holds plain (sparse or smaller)
tensors: sparse ones are stored as bitmask + values, pruned architectures as module shapes.
"""

from __future__ import annotations

import argparse
from typing import Any


def method_choices() -> list[str]:
    """The registered pruning methods' names (the recipe step types)."""
    import torchslim.pruning  # noqa: F401  (its __init__ registers the methods)
    from torchslim.methods import method_names

    return method_names("prune")


def _method_arg(s: str) -> str:
    from torchslim.errors import UnknownNameError
    from torchslim.methods import method_named

    try:
        return method_named(s, "prune").name
    except UnknownNameError as exc:  # argparse prints it as the usage error, with the close names
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model (unstructured, N:M, structured channels, gradual/iterative) and save it")
    from torchslim.cli._common import MODEL_HELP

    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--method", required=True, type=_method_arg, choices=method_choices())
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors; a .json sidecar is written)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--amount", type=_number, help="unstructured: fraction in [0, 1) or integer count of weights; "
                   "gradual/iterative: final sparsity")  # fmt: skip
    p.add_argument("--scope", choices=["layer", "global"])
    p.add_argument("--n", type=int, help="N:M: weights kept per group")
    p.add_argument("--m", type=int, help="N:M: group size")
    p.add_argument("--ratio", type=float, help="structured: fraction of channels removed")
    p.add_argument("--importance", choices=["l1", "l2", "taylor", "bn_scale", "random"])
    p.add_argument("--round-to", type=int, help="structured: keep channel counts at a multiple of this")
    p.add_argument("--targets", default=None, help='JSON: a list of layer names/patterns, or {"name": amount or null}')
    p.add_argument("--calib-samples", type=int, default=256, help="samples of the data set's train split")
    p.add_argument("--report-json", default=None, help="also write the per-layer report to this JSON file")
    from torchslim.cli._common import add_data_args, add_speed_arg

    add_speed_arg(p)
    add_data_args(p, default=None)  # only calibrated methods and unregistered models read data (fashion-mnist if none)
    p.set_defaults(func=run)


def _number(s: str) -> float | int:
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None


def build_config(args: argparse.Namespace, input_shape: list[int] | None) -> Any:
    """The method's config from the flags given; the config refuses a flag that is not one of its
    fields (``NMConfig: amount: unknown field``)."""
    from torchslim.methods import CALIBRATION, method_named

    method = method_named(args.method, "prune")
    cls = method.config_cls
    has = cls.model_fields  # type: ignore[attr-defined]
    fields = {
        "final_sparsity" if "final_sparsity" in has else "amount": args.amount, "scope": args.scope, "n": args.n,
        "m": args.m, "ratio": args.ratio, "importance": args.importance, "round_to": args.round_to,
    }  # fmt: skip
    given = {k: v for k, v in fields.items() if v is not None}
    if CALIBRATION in method.needs and "calib_samples" in has:
        given["calib_samples"] = args.calib_samples
    if input_shape is not None and "input_shape" in has:
        given["input_shape"] = input_shape
    return cls(**given)


def run(args: argparse.Namespace) -> int:

    from torchslim.cli._common import (
        checkpoint_out,
        example_input,
        load_model_arg,
        no_example_reason,
        print_speed,
        save_verb_result,
        side_out,
        targets_arg,
        verb_data,
        verb_speed,
    )
    from torchslim.errors import ConfigError
    from torchslim.methods import method_named
    from torchslim.pruning import make_permanent, prune

    out = checkpoint_out(args.out, args.force, inputs=[args.model])
    report_json = side_out(args.report_json, args.force, inputs=[args.model])
    targets = targets_arg(args.targets, example="'[\"fc1\", \"fc2\"]' or '{\"fc3\": null}'")
    model, meta = load_model_arg(args.model)
    entry_shape = _registered_shape(meta.get("architecture", {}).get("name"))
    config = build_config(args, None if args.dataset else entry_shape)  # options checked before data loads
    needs = method_named(args.method, "prune").needs
    load = args.dataset is not None or entry_shape is None or bool(needs)
    calib, train, val = verb_data(args, meta, needs) if load else (None, None, None)
    example = example_input(meta, calib)  # what the result is timed on against the input model
    if example is None and args.require_speedup is not None:
        raise ConfigError(f"--require-speedup: {no_example_reason(args.model)}")
    pruned, report = prune(model, config, targets=targets, calib_data=calib, train_data=train, val_data=val, quiet=False)
    pruned = make_permanent(pruned, inplace=True)
    speed = verb_speed(pruned, model, example, args.require_speedup)  # a SpeedError here writes nothing
    save_verb_result(args, "prune", "pruned", pruned, out, meta, config, report, report_json, speed)
    if speed is None:
        print_speed(None, none_reason=no_example_reason(args.model))
    return 0


def _registered_shape(arch: str | None) -> list[int] | None:
    """The input shape a registered model declares (its example input when no --data is given)."""
    from torchslim.errors import ConfigError
    from torchslim.models import get_entry

    if not arch:
        return None
    try:
        return list(get_entry(arch).input_shape or []) or None
    except ConfigError:  # not a registered name (a factory): no declared shape
        return None
