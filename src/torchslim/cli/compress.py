"""``torchslim compress --model M --recipe R.yaml --out DIR``: run a recipe, write artifact + report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="run a YAML recipe (prune, quantize, fine-tune, Deep Compression...) on a model")
    p.add_argument("--model", required=True,
                   help="a torchslim checkpoint (.safetensors) or a registered model name (its cached baseline for "
                        "the recipe's dataset if one exists, else random init)")  # fmt: skip
    p.add_argument("--recipe", required=True, help="recipe YAML file (see the recipes/ folder)")
    p.add_argument("--out", required=True, help="output folder (refused if it exists, unless --force)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.FIELD=VALUE",
                   help="override a recipe value: finetune.epochs=2, 2.lr=0.01, '*.max_steps=5', dataset=digits")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST *-ubyte.gz files")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def resolve_model(spec: str, dataset: str, quiet: bool = False) -> tuple[Any, str | None, dict[str, Any] | None, str]:
    """(model, architecture, architecture config, where it came from) for ``--model``."""
    from torchslim.checkpoint import load_checkpoint
    from torchslim.errors import CheckpointError
    from torchslim.models import create_model, get_entry

    if spec.endswith(".safetensors") or Path(spec).exists():
        if not Path(spec).exists():
            raise CheckpointError(f"checkpoint {spec} does not exist")
        model, meta = load_checkpoint(spec)
        arch = meta.get("architecture", {})
        return model, arch.get("name"), arch.get("config") or None, spec
    get_entry(spec)
    from torchslim.training.baseline import baseline_path

    path = baseline_path(spec, dataset)
    if path.is_file():
        model, meta = load_checkpoint(path)
        arch = meta.get("architecture", {})
        return model, spec, arch.get("config") or None, str(path)
    return create_model(spec), spec, None, "random init (no cached baseline)"


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import print_table
    from torchslim.errors import OutputExistsError
    from torchslim.recipes import compress, load_recipe

    recipe = load_recipe(Path(args.recipe), args.overrides)
    if Path(args.out).exists() and not args.force:
        raise OutputExistsError(f"{args.out} already exists; choose another --out or pass --force to replace it")
    model, arch, arch_cfg, origin = resolve_model(args.model, recipe.settings.dataset, args.quiet)
    if not args.quiet:
        print(f"model: {args.model} ({origin})")
    result = compress(model, recipe, out=args.out, force=args.force, architecture=arch, architecture_config=arch_cfg,
                      data_dir=args.data_dir, quiet=args.quiet)  # fmt: skip
    if not args.quiet:
        rows = [[s["name"], s["accuracy"], s["size_bytes"], f"{s['compression_ratio']:.1f}x", s["latency_ms_b64"],
                 f"{100 * s['sparsity']:.1f}%"] for s in result.stages]  # fmt: skip
        print_table(f"{recipe.settings.name} on {recipe.settings.dataset}",
                    ["stage", "accuracy (%)", "size (B)", "compression", "latency b64 (ms)", "sparsity"], rows)  # fmt: skip
        art = result.data["artifact"]
        print(f"artifact {Path(args.out) / art['file']}: {art['size_bytes']:,} bytes ({art['compression_ratio']:.1f}x); "
              f"report {Path(args.out) / 'report.html'}")  # fmt: skip
    return 0
