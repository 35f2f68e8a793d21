"""``torchslim quantize MODEL --method M --out PATH``: quantize a checkpoint and save the integer model.

Methods that need calibration (int8_static, qat) calibrate on ``--calib-samples`` images of the data set's train split; QAT
also trains (``--epochs``) on it. The saved checkpoint holds the INT8/INT4 tensors themselves.
"""

from __future__ import annotations

import argparse
from typing import Any


def method_choices() -> list[str]:
    """The registered quantization methods' names (the recipe step types); ``--method`` also takes
    the dash spelling (``int8-static``)."""
    import torchslim.quantization  # noqa: F401  (its __init__ registers the methods)
    from torchslim.methods import method_names

    return method_names("quantize")


def _method_arg(s: str) -> str:
    from torchslim.errors import UnknownNameError
    from torchslim.methods import method_named

    try:
        return method_named(s, "quantize").name
    except UnknownNameError as exc:  # argparse prints it as the usage error, with the close names
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    from torchslim.cli._common import add_data_args

    p = sub.add_parser("quantize", help="quantize a model (fp16/bf16, int8 dynamic/static, int4/int8 weight-only, QAT)")
    from torchslim.cli._common import MODEL_HELP

    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--method", required=True, type=_method_arg, choices=method_choices())
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors; a .json sidecar is written)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--observer", help="int8_static: minmax, moving_average, percentile, mse, kl or auto")
    p.add_argument("--per-tensor", action="store_true", help="int8_static/qat: one weight scale per layer")
    p.add_argument("--symmetric", action="store_true", help="int8_static/qat: symmetric activation ranges")
    p.add_argument("--bits", type=int, help="weight_only: 4 or 8; qat: weight bits")
    p.add_argument("--activation-bits", type=int, help="int8_static/qat: activation bits")
    p.add_argument("--group-size", type=int, help="weight_only: 32, 64 or 128")
    p.add_argument("--activation", help="int8_dynamic: per_token or per_tensor")
    p.add_argument("--epochs", type=int, help="qat: training epochs")
    p.add_argument("--learn-scales", action="store_true", help="qat: train the activation scales (LSQ)")
    p.add_argument("--targets", default=None, help='JSON {"layer or re:pattern or Type": null to keep in float}')
    p.add_argument("--calib-samples", type=int, default=512, help="calibration samples from the train split")
    p.add_argument("--report-json", default=None, help="also write the per-layer report to this JSON file")
    from torchslim.cli._common import add_speed_arg

    add_speed_arg(p)
    add_data_args(p, default=None)  # int8-static / qat fall back to fashion-mnist; the others need no data
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    """The method's config from the flags given; the config refuses a flag that is not one of its
    fields (``WeightOnlyConfig: observer: unknown field``)."""
    from torchslim.methods import method_named
    from torchslim.training.config import TrainConfig

    cls = method_named(args.method, "quantize").config_cls
    has = cls.model_fields  # type: ignore[attr-defined]
    given = {
        "observer": args.observer, "per_channel": False if args.per_tensor else None,
        "symmetric": True if args.symmetric else None, "activation_bits": args.activation_bits,
        "weight_bits" if "weight_bits" in has else "bits": args.bits, "group_size": args.group_size,
        "activation": args.activation, "learn_scales": True if args.learn_scales else None,
        "train": None if args.epochs is None else TrainConfig(epochs=args.epochs, lr=0.005, augment=False),
    }  # fmt: skip
    fields: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if "max_calib_samples" in has:
        fields["max_calib_samples"] = args.calib_samples
    return cls(**fields)


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
    from torchslim.methods import CALIBRATION, method_named
    from torchslim.quantization import quantize

    out = checkpoint_out(args.out, args.force, inputs=[args.model])
    report_json = side_out(args.report_json, args.force, inputs=[args.model])
    config = build_config(args)  # options are checked before any data or model is loaded
    targets = targets_arg(args.targets, example="'{\"fc3\": null}'", mapping_only=True)
    if args.calib_samples < 1:
        raise ConfigError(f"--calib-samples must be >= 1, got {args.calib_samples}")
    model, meta = load_model_arg(args.model)
    needs = method_named(args.method, "quantize").needs
    # Dynamic and weight-only INT8 need no data; given --data, the report measures their output error.
    calib, train, val = verb_data(args, meta, needs) if CALIBRATION in needs or args.dataset else (None, None, None)
    example = example_input(meta, calib)  # what the result is timed on against the input model
    if example is None and args.require_speedup is not None:
        raise ConfigError(f"--require-speedup: {no_example_reason(args.model)}")
    qmodel, report = quantize(model, config, calib_data=calib, targets=targets, train_data=train, val_data=val, quiet=False)
    speed = verb_speed(qmodel, model, example, args.require_speedup)  # a SpeedError here writes nothing
    save_verb_result(args, "quantize", "quantized", qmodel, out, meta, config, report, report_json, speed)
    if speed is None:
        print_speed(None, none_reason=no_example_reason(args.model))
    return 0
