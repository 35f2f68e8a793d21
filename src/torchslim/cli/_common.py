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
