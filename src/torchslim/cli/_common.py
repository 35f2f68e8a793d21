"""Helpers shared by subcommands: loading a model argument, printing tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch.nn as nn
from rich.console import Console
from rich.table import Table

# In a log or a pipe rich would wrap tables at 80 columns; results tables need their full width.
console = Console(width=None if sys.stdout.isatty() else 160)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or digits")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST *-ubyte.gz files")


def load_model_arg(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint path (``.safetensors``) or a registered model name (random init)."""
    from torchslim.checkpoint import load_checkpoint
    from torchslim.models import create_model

    if spec.endswith(".safetensors") or Path(spec).exists():
        return load_checkpoint(spec)
    return create_model(spec), {"architecture": {"name": spec, "config": {}}}


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c not in ("model", "method", "metric", "name") else "left")
    for r in rows:
        table.add_row(*[_fmt(v) for v in r])
    console.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def checkpoint_out(path: str, force: bool) -> Path:
    """``--out`` as a ``.safetensors`` path, refused if it exists and ``--force`` was not given."""
    from torchslim.errors import OutputExistsError

    out = Path(path)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
    return out


def targets_arg(text: str | None, *, example: str, mapping_only: bool = False) -> Any:
    """Parse ``--targets`` JSON (a list of names/patterns or a {name: value} mapping)."""
    import json

    from torchslim.errors import ConfigError

    if not text:
        return None
    try:
        targets = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--targets is not valid JSON ({exc}); e.g. {example}") from exc
    if mapping_only and not isinstance(targets, dict):
        raise ConfigError(f"--targets must be a JSON object, e.g. {example}")
    return targets
