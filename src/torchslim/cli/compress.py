"""``torchslim compress --model M --recipe R.yaml --out DIR``: run a recipe, write artifact + report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    from torchslim.cli._common import DATA_HELP, MODEL_HELP

    p = sub.add_parser("compress", help="run a YAML recipe (prune, quantize, fine-tune, Deep Compression...) on a model")
    p.add_argument("--model", required=True,
                   help=f"{MODEL_HELP}; a registered name uses its cached baseline for the data if one exists")  # fmt: skip
    p.add_argument("--recipe", required=True, help="recipe YAML file (see the recipes/ folder)")
    p.add_argument("--out", required=True, help="output folder (refused if it exists, unless --force)")
    p.add_argument("--data", "--dataset", dest="dataset", default=None, help=f"{DATA_HELP} (default: the recipe's)")
    p.add_argument("--metric", default=None,
                   help="accuracy, output_error, fidelity or pkg.module:fn (default: the recipe's metric)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.FIELD=VALUE",
                   help="override a recipe value: finetune.epochs=2, 2.lr=0.01, '*.max_steps=5', dataset=digits")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST *-ubyte.gz files")
    p.add_argument("--quiet", action="store_true")
    from torchslim.cli._common import add_speed_arg

    add_speed_arg(p)
    p.set_defaults(func=run)


def resolve_model(spec: str, dataset: str, quiet: bool = False) -> tuple[Any, dict[str, Any], str]:
    """(model, its metadata, where it came from) for ``--model``: a registered name takes its cached
    baseline for ``dataset`` when one exists."""
    from torchslim.checkpoint import load_checkpoint
    from torchslim.errors import CheckpointError, ConfigError, UnknownNameError
    from torchslim.models import get_entry
    from torchslim.sources import resolve_model as resolve

    try:
        get_entry(spec)
    except (ConfigError, UnknownNameError):  # not a registered name: a file, a folder or a factory
        model, meta = resolve(spec)
        return model, meta, spec
    from torchslim.training.baseline import baseline_path

    path = baseline_path(spec, dataset)
    if path.is_file():
        try:
            model, meta = load_checkpoint(path)
        except CheckpointError:
            pass
        else:
            return model, meta, str(path)
    model, meta = resolve(spec)
    return model, meta, "random init (no cached baseline)"


def run(args: argparse.Namespace) -> int:
    from torchslim.cli._common import (
        metric_arg,
        print_speed,
        print_table,
        stage_speedup,
        tokenizer_for,
    )
    from torchslim.io import check_out_dir
    from torchslim.recipes import compress, load_recipe

    recipe = load_recipe(Path(args.recipe), args.overrides)
    check_out_dir(args.out, force=args.force, inputs=[args.model.split("@")[-1], args.model, args.recipe, args.dataset,
                                                   args.data_dir])  # fmt: skip
    metric = metric_arg(args)
    data = args.dataset or recipe.settings.dataset
    model, meta, origin = resolve_model(args.model, data, args.quiet)
    arch = meta.get("architecture", {})
    if not args.quiet:
        print(f"model: {args.model} ({origin})")
    result = compress(model, recipe, out=args.out, force=args.force, architecture=arch.get("name"),
                      architecture_config=arch.get("config") or None, data_dir=args.data_dir, data=data, metric=metric,
                      tokenizer=tokenizer_for(meta), quiet=args.quiet, require_speedup=args.require_speedup)  # fmt: skip
    if not args.quiet:
        m = result.stages[0]["metric"]
        rows = [[s["name"], s["metric_value"], s["size_bytes"], f"{s['compression_ratio']:.1f}x", s["latency_ms_b64"],
                 stage_speedup(s), f"{100 * s['sparsity']:.1f}%"] for s in result.stages]  # fmt: skip
        print_table(f"{recipe.settings.name} on {data}",
                    ["stage", "accuracy (%)" if m == "accuracy" else m, "size (B)", "compression", "latency b64 (ms)",
                     "speed-up b1 / b64", "sparsity"], rows)  # fmt: skip
        print_speed(result.speed)
        art = result.data["artifact"]
        print(f"artifact {Path(args.out) / art['file']}: {art['size_bytes']:,} bytes ({art['compression_ratio']:.1f}x); "
              f"report {Path(args.out) / 'report.html'}")  # fmt: skip
    return 0
