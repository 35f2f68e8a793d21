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
                     config: Any, report: Any, report_json: Path | None, speed: Any = None) -> None:  # fmt: skip
    """Save a verb's model with its config and report in the header, write ``--report-json``, print the tables.

    ``speed`` (the :class:`~torchslim.measure.SpeedCheck` of the result against the input model) goes
    into ``--report-json`` and the table, never into the checkpoint (whose bytes stay reproducible)."""
    from torchslim.checkpoint import save_checkpoint
    from torchslim.io import write_json

    arch = meta.get("architecture", {})
    save_checkpoint(
        model, out, architecture=arch.get("name"), architecture_config=arch.get("config") or None,
        meta={"kind": kind, f"{verb}_config": {"type": config.method, **config.model_dump()}, "report": report.to_dict()},
    )  # fmt: skip
    if report_json is not None:
        write_json(report_json, {**report.to_dict(), **({"speed": speed.as_dict()} if speed is not None else {})})
    report.print()
    rows = [[k, v] for k, v in report.summary.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    rows.append(["file size (bytes)", out.stat().st_size])
    rows += speed_rows(speed)
    print_table(f"{verb} {config.method}: {args.model} -> {out}", ["metric", "value"], rows)
    print_speed(speed)


# --- the speed guard on the command line (see torchslim.measure.speed) ---------------------------------


def speedup_arg(text: str) -> float:
    """``--require-speedup``: a number above 0 (argparse turns a bad one into a usage error)."""
    from torchslim.errors import ConfigError
    from torchslim.measure.speed import check_required_speedup

    try:
        return check_required_speedup(float(text), what="--require-speedup")
    except (ValueError, ConfigError) as exc:
        msg = str(exc) if isinstance(exc, ConfigError) else f"--require-speedup must be a number above 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg.replace("--require-speedup must", "must")) from None


def add_speed_arg(p: argparse.ArgumentParser, against: str = "the input model") -> None:
    p.add_argument("--require-speedup", type=speedup_arg, default=None, metavar="X",
                   help=f"fail (exit 2, nothing written) unless the result runs at least X times as fast as {against} "
                        "at batch 64 and batch 1, timed interleaved on this machine (1.0: not slower)")  # fmt: skip


def speed_rows(speed: Any) -> list[list[Any]]:
    """Table rows of a speed check: the interleaved speed-ups and the verdict, flagged when slower."""
    if speed is None:
        return []
    ref = speed.reference_name
    rows: list[list[Any]] = [[f"speed-up vs {ref}, batch {speed.batch_size} (interleaved)", f"{speed.speedup:.2f}x"]]
    if speed.speedup_b1 is not None:
        rows.append([f"speed-up vs {ref}, batch 1 (interleaved)", f"{speed.speedup_b1:.2f}x"])
    b, s = speed.worst
    flag = (f"[bold red]SLOWER than {ref}: {s:.2f}x at batch {b}[/]" if speed.slower
            else f"[green]faster than {ref}[/]" if speed.faster else f"[yellow]no faster than {ref}[/]")  # fmt: skip
    rows.append(["speed", flag])
    return rows


def stage_speedup(stage: dict[str, Any]) -> str:
    """A recipe stage's ``0.17x / 0.86x`` (batch 1 / batch 64, interleaved with the input model),
    red when the stage is slower than it."""
    if stage.get("speedup_b64") is None:
        return "n/a"
    text = f"{stage['speedup_b1']:.2f}x / {stage['speedup_b64']:.2f}x"
    return f"[bold red]{text}[/]" if (stage.get("speed") or {}).get("slower") else text


def print_speed(speed: Any, *, none_reason: str | None = None) -> None:
    """The speed guard's one line below a table: green when faster, red with the reasons when slower."""
    from rich.markup import escape

    if speed is None:
        if none_reason:
            console.print(f"[yellow]speed not measured: {escape(none_reason)}[/]")
        return
    style = "bold red" if speed.slower else "green" if speed.faster else "yellow"
    console.print(f"[{style}]speed: {escape(speed.verdict())}[/]")


def example_input(meta: dict[str, Any], data: Any) -> Any:
    """A ``ModelInput`` to time a model on: the first batch of ``data``, else random inputs of the
    shape a registered model declares, else None."""
    import torch

    from torchslim.data.protocol import ModelInput, first_input
    from torchslim.errors import ConfigError
    from torchslim.models import get_entry

    if data is not None:
        return first_input(data)
    name = meta.get("architecture", {}).get("name")
    try:
        shape = get_entry(name).input_shape if name else None
    except ConfigError:  # not a registered name
        shape = None
    if not shape:
        return None
    return ModelInput((torch.randn(1, *shape, generator=torch.Generator().manual_seed(0)),))  # the global RNG untouched


def no_example_reason(spec: str) -> str:
    return f"{spec} declares no input shape; pass --data with inputs it takes to time it against the input model"


def verb_speed(model: nn.Module, original: nn.Module, example: Any, require: float | None) -> Any:
    """The result of a verb timed interleaved with its input model (each as the runtime it ships as);
    :class:`~torchslim.errors.SpeedError` when below ``require``, before anything is written."""
    from torchslim.measure.speed import speed_check
    from torchslim.quantization import timed_runtime

    if example is None:
        return None
    runtime, name = timed_runtime(model)
    ref_runtime, ref_name = timed_runtime(original)
    check = speed_check(model, original, example, runtime=runtime, reference_runtime=ref_runtime, runtime_name=name,
                        reference_runtime_name=ref_name)  # fmt: skip
    check.require(require, what="the result")
    return check


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
