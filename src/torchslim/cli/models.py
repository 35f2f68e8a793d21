"""``torchslim models``: every registered model with its parameter count."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models and their parameter counts")
    p.add_argument("--family", default=None, help="only this family (lenet, resnet-cifar, torchvision, transformer)")
    p.set_defaults(func=run)


def param_count(name: str) -> int:
    """Parameters of a registered model, counted on the meta device (nothing is allocated)."""
    import torch

    from torchslim.models import create_model, get_entry

    if get_entry(name).family == "transformer":
        import json

        from torchslim.models.transformers import minilm_dir

        raw = (minilm_dir() / "model.safetensors").open("rb").read(8)
        with (minilm_dir() / "model.safetensors").open("rb") as f:
            f.seek(8)
            header = json.loads(f.read(int.from_bytes(raw, "little")))
        import math

        return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    try:
        with torch.device("meta"):
            return sum(p.numel() for p in create_model(name).parameters())
    except (NotImplementedError, RuntimeError):
        # A few builders (torchvision's RegNets) compute widths with real tensor ops.
        return sum(p.numel() for p in create_model(name).parameters())


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import print_table
    from torchslim.errors import TorchSlimError
    from torchslim.models import get_entry, model_names

    if args.family is not None:
        from torchslim.errors import UnknownNameError, suggest

        families = sorted({get_entry(n).family for n in model_names()})
        if args.family not in families:
            raise UnknownNameError(f"no model family {args.family!r}; choose one of {', '.join(families)}.{suggest(args.family, families)}")
    rows = []
    for n in model_names(args.family):
        e = get_entry(n)
        try:
            count: object = param_count(n)
        except TorchSlimError as exc:
            count = f"unavailable ({exc})"
        shape = "x".join(map(str, e.input_shape)) if e.input_shape else "text"
        rows.append([n, e.family, count, shape, e.description])
    print_table("torchslim models", ["name", "family", "params", "input", "description"], rows)
    return 0
