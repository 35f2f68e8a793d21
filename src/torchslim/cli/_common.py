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


DATA_HELP = ("data: a built-in data set (fashion-mnist, digits), an image folder (class sub-folders; train/ val/ "
             "test/ inside for splits), a UTF-8 sentences file (with a Hugging Face model folder), or "
             "pkg.module:factory returning a DataLoader or a dict of them by split")
MODEL_HELP = ("model: a registered name, a torchslim .safetensors checkpoint, a Hugging Face model folder, or "
              "pkg.module:factory (or file.py:factory) returning an nn.Module")


def add_data_args(p: argparse.ArgumentParser, default: str | None = "fashion-mnist", *, metric: bool = True) -> None:
    p.add_argument("--data", "--dataset", dest="dataset", default=default, help=f"{DATA_HELP} (default: {default})")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST *-ubyte.gz files")
    if not metric:
        return
    p.add_argument("--metric", default="accuracy",
                   help="accuracy (default), output_error or fidelity (against the FP32 model), or pkg.module:fn "
                        "taking (output, target) and returning one number")  # fmt: skip


def load_model_arg(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """Any model source (see :mod:`torchslim.sources`) and its metadata."""
    from torchslim.sources import resolve_model

    return resolve_model(spec)


def tokenizer_for(meta: dict[str, Any]) -> Any:
    """The tokenizer of a Hugging Face model folder, for a sentences file as data."""
    folder = meta.get("hf_folder")
    if folder is None:
        return None
    from torchslim.transformers.embed import load_tokenizer

    return load_tokenizer(folder)


def data_arg(args: argparse.Namespace, split: str, meta: dict[str, Any] | None = None) -> Any:
    """One split of ``--data``."""
    from torchslim.sources import resolve_data

    return resolve_data(args.dataset, split, tokenizer=tokenizer_for(meta or {}), data_dir=args.data_dir)


def metric_arg(args: argparse.Namespace) -> Any:
    """``--metric``: a built-in name or an imported ``pkg.module:fn``."""
    from torchslim.measure.metrics import BUILTIN
    from torchslim.sources import import_factory

    m = getattr(args, "metric", "accuracy")
    if m is None or m in BUILTIN or ":" not in m:
        return m
    fn = import_factory(m, "metric")
    _check_metric_signature(fn, m)
    return fn


def _check_metric_signature(fn: Any, spec: str) -> None:
    """A metric is called as ``fn(output, target)``: refuse, before any work, one that cannot take that."""
    import inspect

    from torchslim.errors import ConfigError

    if not callable(fn):
        raise ConfigError(f"--metric {spec} is a {type(fn).__name__}, not a function; give pkg.module:fn taking (output, target)")
    if hasattr(fn, "update") and hasattr(fn, "compute"):  # a torchmetrics metric object
        return
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError as exc:
        raise ConfigError(f"--metric {spec} cannot be called as {spec.split(':')[-1]}(output, target) ({exc}); "
                          "give a function of (output, target) that returns one number") from None  # fmt: skip
    except ValueError:  # a builtin without a signature: it is tried when called
        pass


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


# Outputs the running command has claimed (--out, its sidecar, --json...), so that no two of them are one file.
_CLAIMED: list[Path] = []


def reset_claims() -> None:
    """Forget the outputs claimed so far (each CLI command starts with none)."""
    _CLAIMED.clear()


def _same(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (whether or not it exists yet)."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError, RuntimeError):
        return False


def _label(flag: str, p: Path) -> str:
    return f"{flag} {p}" if flag else str(p)


def _is_folder_spec(path: str) -> bool:
    return path.endswith(("/", "\\")) or Path(path).name in ("", ".", "..") or Path(path).is_dir()


def _check_writable(p: Path, flag: str) -> None:
    """Refuse, before any work, an output whose folder cannot be written (``/proc/r.json``): it would
    fail only after the model was written."""
    import os
    import tempfile

    from torchslim.errors import ConfigError

    folder = p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # atomic writes create the missing folders below this one
    if not folder.is_dir():
        raise ConfigError(f"{_label(flag, p)}: {folder} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".torchslim-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{_label(flag, p)}: cannot write in {folder} ({exc.strerror}); choose a folder you can write") from None


def _check_claims(p: Path, flag: str, inputs: list[str | None]) -> None:
    from torchslim.errors import OutputExistsError

    for inp in inputs:
        if inp and _same(p, inp):
            raise OutputExistsError(f"{_label(flag, p)} would overwrite the input {inp}; choose another path")
    for c in _CLAIMED:
        if _same(p, c):
            raise OutputExistsError(f"{_label(flag, p)} is also where this command writes another output; give each output its own path")


def checkpoint_out(path: str, force: bool, inputs: list[str | None] | None = None) -> Path:
    """``--out`` as a ``.safetensors`` path (a name without a suffix gets one), checked before any work:
    refused if it or its ``.json`` sidecar is one of the command's ``inputs`` (even with ``--force``), a
    folder, another kind of file, exists without ``--force``, or lies in a folder that cannot be written."""
    from torchslim.errors import ConfigError, OutputExistsError

    if _is_folder_spec(path):
        raise ConfigError(f"--out {path} is a folder; give a file name such as {Path(path) / 'model.safetensors'}")
    given = Path(path)
    out = given.with_suffix(".safetensors")
    sidecar = out.with_suffix(".json")
    for p in (out, sidecar):  # an input first: that is the mistake that would cost a file
        _check_claims(p, "--out", inputs or [])
    if given.suffix not in ("", ".safetensors"):
        raise ConfigError(f"--out {path}: a checkpoint is a .safetensors file (a .json sidecar goes beside it); "
                          f"name it {out}")  # fmt: skip
    for p in (out, sidecar):
        if p.is_dir():
            raise ConfigError(f"--out {out}: {p} is a folder; choose another name")
    for p in (out, sidecar):
        if p.exists() and not force:
            raise OutputExistsError(f"{p} exists; pass --force to overwrite it")
    _check_writable(out, "--out")
    _CLAIMED.extend((out, sidecar))
    return out


def side_out(path: str | None, force: bool, inputs: list[str | None]) -> Path | None:
    """A side output such as ``--report-json``, checked like ``--out`` before any work starts (and
    refused where another output of the same command goes)."""
    from torchslim.errors import ConfigError, OutputExistsError

    if path is None:
        return None
    if _is_folder_spec(path):
        raise ConfigError(f"{path} is a folder; give a file name such as {Path(path) / 'report.json'}")
    p = Path(path)
    _check_claims(p, "", inputs)
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; pass --force to overwrite it")
    _check_writable(p, "")
    _CLAIMED.append(p)
    return p


MAX_CALIB_SAMPLES = 10_000_000  # the same bound as a recipe's calibration_samples


def verb_data(args: argparse.Namespace, meta: dict[str, Any], needs: frozenset[str]) -> tuple[Any, Any, Any]:
    """``(calibration, train, val)`` from ``--data`` (fashion-mnist when none was given) for quantize / prune:
    the first ``--calib-samples`` training samples, and both splits for methods that train."""
    from torchslim.data import ImageData
    from torchslim.errors import ConfigError
    from torchslim.methods import TRAINING

    if not 1 <= args.calib_samples <= MAX_CALIB_SAMPLES:
        raise ConfigError(f"--calib-samples must be 1 to {MAX_CALIB_SAMPLES:,}, got {args.calib_samples}")
    args.dataset = args.dataset or "fashion-mnist"
    got = data_arg(args, "train", meta)
    calib = got.subset(args.calib_samples) if isinstance(got, ImageData) else got
    if TRAINING not in needs:
        return calib, None, None
    return calib, got, data_arg(args, "val", meta)


def save_verb_result(args: argparse.Namespace, verb: str, kind: str, model: nn.Module, out: Path, meta: dict[str, Any],
                     config: Any, report: Any, report_json: Path | None) -> None:  # fmt: skip
    """Save a verb's model with its config and report in the header, write ``--report-json``, print the tables."""
    from torchslim.checkpoint import save_checkpoint
    from torchslim.io import write_json

    arch = meta.get("architecture", {})
    save_checkpoint(
        model, out, architecture=arch.get("name"), architecture_config=arch.get("config") or None,
        meta={"kind": kind, f"{verb}_config": {"type": config.method, **config.model_dump()}, "report": report.to_dict()},
    )  # fmt: skip
    if report_json is not None:
        write_json(report_json, report.to_dict())
    report.print()
    rows = [[k, v] for k, v in report.summary.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    rows.append(["file size (bytes)", out.stat().st_size])
    print_table(f"{verb} {config.method}: {args.model} -> {out}", ["metric", "value"], rows)


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
