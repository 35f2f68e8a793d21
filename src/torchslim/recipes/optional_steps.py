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

from torchslim.layer_report import Report
from torchslim.recipes.context import StepContext
from torchslim.recipes.registry import CODED, QUANTIZED, SHARED, SPARSE, STRUCTURED, register_step

NOT_AFTER_QUANT = "its weights are already integers; quantize last"
NOT_AFTER_SHARED = "weight-shared layers hold codebook indices, not float weights"
NOT_AFTER_CODED = "Huffman-coded layers are the final storage form"


def step_name(cls: type[BaseModel]) -> str:
    """``StaticInt8Config`` -> ``static_int8`` (or the config's ``method`` default if it is a string).

    >>> class NM24Config(BaseModel):
    ...     pass
    >>> step_name(NM24Config)
    'nm24'
    """
    f = cls.model_fields.get("method")
    if f is not None and isinstance(f.default, str) and f.default:
        return f.default.replace("-", "_")
    base = cls.__name__.removesuffix("Config")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base).lower()


def _configs(module: Any) -> list[type[BaseModel]]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    out = []
    for n in names:
        obj = getattr(module, n, None)
        if isinstance(obj, type) and issubclass(obj, BaseModel) and n.endswith("Config"):
            out.append(obj)
    return out


def _is_float_cast(cls: type[BaseModel]) -> bool:
    return bool(re.search(r"fp16|bf16|float16|bfloat16|half", cls.__name__, re.I))


def _is_qat(cls: type[BaseModel]) -> bool:
    return "qat" in cls.__name__.lower()


def _is_structured(cls: type[BaseModel]) -> bool:
    return "structured" in cls.__name__.lower() and "unstructured" not in cls.__name__.lower() or "channel" in cls.__name__.lower()


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _call_verb(verb: Any, model: nn.Module, config: Any, ctx: StepContext, **kw: Any) -> tuple[nn.Module, Report | None]:
    import inspect

    params = inspect.signature(verb).parameters
    args: dict[str, Any] = {}
    if "targets" in params and ctx.targets is not None:
        args["targets"] = ctx.targets
    for k, v in kw.items():
        if k in params:
            args[k] = v() if callable(v) else v
    out = verb(model, config, **args)
    if isinstance(out, tuple):
        new, report = out[0], out[1] if len(out) > 1 else None
    else:
        new, report = out, None
    return new, report if isinstance(report, Report) else None


def _wire_quantization() -> None:
    mod = _import("torchslim.quantization")
    if mod is None or not hasattr(mod, "quantize"):
        return
    verb = mod.quantize
    for cls in _configs(mod):
        def run(model: nn.Module, config: Any, ctx: StepContext, _v: Any = verb) -> tuple[nn.Module, Report | None]:
            dataset = getattr(config, "dataset", None)
            return _call_verb(_v, model, config, ctx, calib_data=lambda: ctx.calibration(dataset))

        produces = set() if (_is_float_cast(cls) or _is_qat(cls)) else {QUANTIZED}
        register_step(
            step_name(cls), cls, run, produces=produces, accepts_targets=True,
            forbidden_after={QUANTIZED: NOT_AFTER_QUANT, SHARED: NOT_AFTER_SHARED, CODED: NOT_AFTER_CODED},
        )  # fmt: skip


def _wire_pruning() -> None:
    mod = _import("torchslim.pruning")
    if mod is None or not hasattr(mod, "prune"):
        return
    verb = mod.prune
    for cls in _configs(mod):
        def run(model: nn.Module, config: Any, ctx: StepContext, _v: Any = verb) -> tuple[nn.Module, Report | None]:
            dataset = getattr(config, "dataset", None)
            return _call_verb(_v, model, config, ctx, calib_data=lambda: ctx.calibration(dataset),
                              train_data=lambda: ctx.data("train", dataset), val_data=lambda: ctx.data("val", dataset),
                              quiet=ctx.quiet)  # fmt: skip

        register_step(
            step_name(cls), cls, run, produces={STRUCTURED} if _is_structured(cls) else {SPARSE}, accepts_targets=True,
            forbidden_after={QUANTIZED: NOT_AFTER_QUANT, SHARED: NOT_AFTER_SHARED, CODED: NOT_AFTER_CODED},
        )  # fmt: skip


def _wire_export() -> None:
    mod = _import("torchslim.export")
    if mod is None:
        return
    verb = getattr(mod, "export", None) or getattr(mod, "export_onnx", None)
    if verb is None:
        return
    for cls in _configs(mod):
        def run(model: nn.Module, config: Any, ctx: StepContext, _v: Any = verb) -> tuple[nn.Module, Report | None]:
            _call_verb(_v, model, config, ctx, out_dir=ctx.run_dir)
            return model, None

        register_step(step_name(cls), cls, run)


def register_optional() -> None:
    _wire_quantization()
    _wire_pruning()
    _wire_export()
