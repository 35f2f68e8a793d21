"""Steps for the other verbs' methods: every config class ``torchslim.quantization``,
``torchslim.pruning`` and ``torchslim.export`` export becomes a step type.

The step type is the config class name in snake case without ``Config``
(``StaticInt8Config`` -> ``static_int8``), or the class's ``method`` default when it has one.
A package that is missing (or fails to import) simply contributes no steps; ``torchslim
compress`` then reports the type as unknown with the close names that do exist.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import torch.nn as nn
from pydantic import BaseModel

from torchslim.data.protocol import first_input
from torchslim.layer_report import Report
from torchslim.recipes.context import StepContext
from torchslim.recipes.registry import CODED, QUANTIZED, SHARED, SPARSE, STRUCTURED, register_step

NOT_AFTER_QUANT = "its weights are already integers; quantize last"
NOT_AFTER_SHARED = "weight-shared layers hold codebook indices, not float weights"
NOT_AFTER_CODED = "Huffman-coded layers are the final storage form"


def step_name(cls: type[BaseModel]) -> str:
    """The config's ``method`` (a class attribute) or ``StaticInt8Config`` -> ``static_int8``.

    >>> class NM24Config(BaseModel):
    ...     pass
    >>> step_name(NM24Config)
    'nm24'
    """
    method = getattr(cls, "method", None)
    if isinstance(method, str) and method:
        return method.replace("-", "_")
    base = cls.__name__.removesuffix("Config")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base).lower()


def _configs(module: Any) -> list[type[BaseModel]]:
    """The package's method configs: its ``CONFIGS`` (dict or sequence), else its exported ``*Config`` classes."""
    found = getattr(module, "CONFIGS", None)
    if found is None:
        config_mod = _import(f"{module.__name__}.config")
        found = getattr(config_mod, "CONFIGS", None) if config_mod is not None else None
    if isinstance(found, dict):
        candidates = list(found.values())
    elif isinstance(found, list | tuple):
        candidates = list(found)
    else:
        names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        candidates = [getattr(module, n, None) for n in names if n.endswith("Config")]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def _is_structured(cls: type[BaseModel]) -> bool:
    return "structured" in cls.__name__.lower() and "unstructured" not in cls.__name__.lower() or "channel" in cls.__name__.lower()


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class _Lazy:
    """A value computed only if the verb takes that argument (data sets load on demand)."""

    def __init__(self, fn: Any) -> None:
        self.get = fn


def _call_verb(verb: Any, model: nn.Module, config: Any, ctx: StepContext, **kw: Any) -> tuple[nn.Module, Report | None]:
    import inspect

    params = inspect.signature(verb).parameters
    args: dict[str, Any] = {}
    if "targets" in params and ctx.targets is not None:
        args["targets"] = ctx.targets
    for k, v in kw.items():
        if k in params:
            args[k] = v.get() if isinstance(v, _Lazy) else v
    out = verb(model, config, **args)
    if isinstance(out, tuple):
        new, report = out[0], out[1] if len(out) > 1 else None
    else:
        new, report = out, None
    return new, report if isinstance(report, Report) else None


def _verb(module: Any, name: str) -> Any:
    verb = getattr(module, name, None)
    if verb is None:
        api = _import(f"{module.__name__}.api")
        verb = getattr(api, name, None) if api is not None else None
    return verb


def _wire_quantization() -> None:
    mod = _import("torchslim.quantization")
    verb = _verb(mod, "quantize") if mod is not None else None
    if verb is None:
        return
    for cls in _configs(mod):
        def run(model: nn.Module, config: Any, ctx: StepContext, _v: Any = verb) -> tuple[nn.Module, Report | None]:
            return _call_verb(_v, model, config, ctx, calib_data=_Lazy(lambda: ctx.calibration()),
                              train_data=_Lazy(lambda: ctx.data("train")), val_data=_Lazy(lambda: ctx.data("val")),
                              teacher=ctx.teacher, quiet=ctx.quiet)  # fmt: skip

        # Every quantization method ends in low-precision or integer layers (QAT converts at its end).
        register_step(
            step_name(cls), cls, run, produces={QUANTIZED}, accepts_targets=True,
            forbidden_after={QUANTIZED: NOT_AFTER_QUANT, SHARED: NOT_AFTER_SHARED, CODED: NOT_AFTER_CODED},
        )  # fmt: skip


def _wire_pruning() -> None:
    mod = _import("torchslim.pruning")
    verb = _verb(mod, "prune") if mod is not None else None
    if verb is None:
        return
    make_permanent = getattr(mod, "make_permanent", None)
    for cls in _configs(mod):
        def run(model: nn.Module, config: Any, ctx: StepContext, _v: Any = verb) -> tuple[nn.Module, Report | None]:
            new, report = _call_verb(_v, model, config, ctx, calib_data=_Lazy(lambda: ctx.calibration()),
                                     train_data=_Lazy(lambda: ctx.data("train")), val_data=_Lazy(lambda: ctx.data("val")),
                                     teacher=ctx.teacher, quiet=ctx.quiet)  # fmt: skip
            # Fold masks into the weights: the model saves with its architecture's keys (sparse
            # tensors as bitmask + values) and later fine-tuning steps keep the zeros.
            if make_permanent is not None:
                new = make_permanent(new, inplace=True)
            return new, report

        register_step(
            step_name(cls), cls, run, produces={STRUCTURED} if _is_structured(cls) else {SPARSE}, accepts_targets=True,
            forbidden_after={QUANTIZED: NOT_AFTER_QUANT, SHARED: NOT_AFTER_SHARED, CODED: NOT_AFTER_CODED},
        )  # fmt: skip


def _wire_export() -> None:
    mod = _import("torchslim.export.onnx")
    export_onnx = getattr(mod, "export_onnx", None) if mod is not None else None
    config_cls = getattr(mod, "ExportConfig", None) if mod is not None else None
    if export_onnx is None or config_cls is None:
        return

    def run(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            # Into the run's output folder when there is one (the file is part of the result).
            path = (ctx.run_dir or Path(d)) / "model.onnx"
            res = export_onnx(model, path, example=first_input(ctx.data("test")).resized(1).example(), config=config,
                              force=True)  # fmt: skip
            rep = Report("export", "onnx")
            rep.summary = {"file": path.name if ctx.run_dir else None, "size_bytes": res.size_bytes,
                           "max_abs_diff": res.max_abs_diff, "ops": res.ops}  # fmt: skip
        return model, rep

    register_step("export", config_cls, run, description="export to ONNX and check it in ONNX Runtime")


def register_optional() -> None:
    _wire_quantization()
    _wire_pruning()
    _wire_export()
