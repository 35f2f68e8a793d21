"""``quantize(model, config)``: the one quantization verb; every input is checked before work."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import CompatibilityError, ConfigError, DataError, TargetError
from torchslim.layer_report import Report
from torchslim.quantization.config import (
    CONFIGS,
    BF16Config,
    DynamicInt8Config,
    FP16Config,
    QATConfig,
    QuantConfig,
    SeedDynamicConfig,
    StaticInt8Config,
    WeightOnlyConfig,
)  # fmt: skip
from torchslim.quantization.modules import Int8DynamicLinear, WeightOnlyLinear
from torchslim.quantization.static import Precision, quantize_static
from torchslim.quantization.static_modules import QConv2d, QLinear
from torchslim.targets import resolve_targets

_QUANT_TYPES = (Int8DynamicLinear, WeightOnlyLinear, QConv2d, QLinear)
_FOREIGN_QUANT = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torchao.")
_CAST_HOOKS = "_torchslim_cast_dtype"


def quantize(
    model: nn.Module,
    config: QuantConfig,
    *,
    calib_data: Any = None,
    targets: Mapping[str, Any] | None = None,
    train_data: Any = None,
    val_data: Any = None,
    quiet: bool = True,
) -> tuple[nn.Module, Report]:
    """Quantize a copy of ``model`` with the method ``config`` names; returns ``(model, report)``.

    * ``calib_data``: input samples (a tensor ``[N, ...]``, an ``ImageData``, or an iterable of
      tensors / ``(x, y)`` batches). Required by :class:`StaticInt8Config` and
      :class:`QATConfig`; with other methods it measures the output error in the report.
    * ``targets``: the one targeting rule (:func:`torchslim.targets.resolve_targets`); a value of
      ``None`` keeps a layer in float (mixed precision), any other value quantizes it.
    * ``train_data`` / ``val_data``: ``ImageData`` for :class:`QATConfig`'s training.

    The user's model is never modified. Every layer that holds weights appears in the report:
    quantized, folded, or left in float with the reason.

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.data import load_dataset
    >>> from torchslim.quantization import StaticInt8Config
    >>> calib = load_dataset("digits", "train").images[:128]
    >>> q, report = quantize(create_model("lenet5"), StaticInt8Config(), calib_data=calib)
    >>> [e.action for e in report.layers]
    ['int8-static', 'int8-static', 'int8-static', 'int8-static']
    >>> q(calib[:2]).shape
    torch.Size([2, 10])
    """
    if not isinstance(config, QuantConfig):
        names = ", ".join(c.__name__ for c in CONFIGS)
        raise ConfigError(f"quantize() needs one of the config classes {names}; got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"quantize() needs an nn.Module, got {type(model).__name__}")
    check_not_quantized(model)
    report = Report("quantize", config.method)
    if isinstance(config, (FP16Config, BF16Config, SeedDynamicConfig)) and targets:
        raise ConfigError(
            f"{type(config).__name__} applies to the whole model and takes no targets; use DynamicInt8Config, "
            "StaticInt8Config or WeightOnlyConfig for mixed precision"
        )
    needs_calib = isinstance(config, (StaticInt8Config, QATConfig))
    if needs_calib and calib_data is None:
        raise ConfigError(
            f"{type(config).__name__} needs calib_data: a few hundred representative inputs "
            "(e.g. load_dataset(...).subset(512) or a tensor [N, C, H, W]); "
            "DynamicInt8Config needs none"
        )
    limit = getattr(config, "max_calib_samples", None)
    calib = None if calib_data is None else calib_tensor(calib_data, model, limit)
    if isinstance(config, QATConfig) and (train_data is None or val_data is None):
        raise ConfigError("QATConfig trains the model: pass train_data= and val_data= (ImageData)")

    if isinstance(config, (FP16Config, BF16Config)):
        new = _cast(model, torch.float16 if isinstance(config, FP16Config) else torch.bfloat16, report)
    elif isinstance(config, SeedDynamicConfig):
        new = seed_dynamic(model, report)
    elif isinstance(config, DynamicInt8Config):
        layers = _resolve(model, targets, (nn.Linear,))
        new = _swap_linears(model, layers, report, "int8-dynamic",
                            lambda m: Int8DynamicLinear.from_float(m, activation=config.activation),
                            f"per-channel int8 weights, {config.activation.replace('_', '-')} int8 activations")  # fmt: skip
        _report_unsupported(model, layers, report, "dynamic INT8 covers nn.Linear; StaticInt8Config quantizes Conv2d", (nn.Linear,))
    elif isinstance(config, WeightOnlyConfig):
        layers = _resolve(model, targets, (nn.Linear,))
        new = _swap_linears(model, layers, report, f"int{config.bits}-weight-only",
                            lambda m: WeightOnlyLinear.from_float(m, bits=config.bits, group_size=config.group_size),
                            f"asymmetric int{config.bits}, group {config.group_size}, fp16 scales"
                            f"{', packed 2 per byte' if config.bits == 4 else ''}")  # fmt: skip
        _report_unsupported(model, layers, report, "weight-only quantization covers nn.Linear", (nn.Linear,))
    elif isinstance(config, StaticInt8Config):
        layers = _resolve(model, targets, (nn.Conv2d, nn.Linear))
        assert calib is not None
        prec = Precision(config.weight_bits, config.activation_bits, config.reduce_range, config.per_channel, config.symmetric)
        _check_range(prec)
        new = quantize_static(
            model, list(layers), calib, prec=prec, observer=config.observer, batch_size=config.batch_size,
            percentile=config.percentile, auto_samples=config.auto_samples, report=report, fold_bn=config.fold_bn,
        )  # fmt: skip
        _report_unsupported(model, layers, report, "no integer kernel for this layer type", (nn.Conv2d, nn.Linear),
                            skip_bn=config.fold_bn)
    else:
        assert isinstance(config, QATConfig) and calib is not None
        from torchslim.quantization.qat_flow import run_qat

        layers = _resolve(model, targets, (nn.Conv2d, nn.Linear))
        prec = Precision(config.weight_bits, config.activation_bits, config.reduce_range, config.per_channel, config.symmetric)
        _check_range(prec)
        new = run_qat(model, list(layers), calib, config, prec, train_data, val_data, report, quiet=quiet)
        _report_unsupported(model, layers, report, "no integer kernel for this layer type", (nn.Conv2d, nn.Linear),
                            skip_bn=config.fold_bn)
    _summarize(model, new, report, calib)
    return new, report


# ----------------------------------------------------------------------------- validation
def check_not_quantized(model: nn.Module) -> None:
    """Raise :class:`CompatibilityError` if ``model`` already holds quantized or cast layers."""
    for name, m in model.named_modules():
        mod_path = type(m).__module__
        if isinstance(m, _QUANT_TYPES) or mod_path.startswith(_FOREIGN_QUANT):
            raise CompatibilityError(
                f"layer {name or '<root>'} is already quantized ({type(m).__name__}); quantize the original "
                "float model instead (quantizing twice compounds the rounding error)"
            )
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_quantized or t.dtype in (torch.float16, torch.bfloat16):
            raise CompatibilityError(
                f"tensor {name} is already {t.dtype} (the model was quantized or cast); quantize the float32 model"
            )


def _iter_batches(data: Any) -> Iterable[Any]:
    if hasattr(data, "images") and isinstance(data.images, torch.Tensor):
        return [data.images]
    if isinstance(data, torch.Tensor):
        return [data]
    if isinstance(data, (str, bytes, Mapping)):
        raise DataError(f"calib_data must be a tensor, an ImageData or batches of tensors, not {type(data).__name__}")
    return data


def calib_tensor(data: Any, model: nn.Module, limit: int | None = None) -> torch.Tensor:
    """All calibration inputs as one float tensor, checked: non-empty, finite, fits ``model``."""
    parts: list[torch.Tensor] = []
    total = 0
    try:
        for b in _iter_batches(data):
            x = b[0] if isinstance(b, (tuple, list)) else b
            if not isinstance(x, torch.Tensor):
                raise DataError(f"calibration batches must be tensors or (x, y) pairs, got {type(x).__name__}")
            parts.append(x)
            total += len(x) if x.dim() else 1
            if limit is not None and total >= limit:
                break
    except TypeError as exc:
        raise DataError(f"calib_data of type {type(data).__name__} is not iterable; pass a tensor [N, ...]") from exc
    if not parts or total == 0 or any(p.numel() == 0 for p in parts):
        raise DataError("calib_data is empty; pass a few hundred representative input samples")
    shapes = {tuple(p.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise DataError(f"calibration batches have different sample shapes {sorted(shapes)}; they must all match")
    x = torch.cat(parts)[:limit] if limit else torch.cat(parts)
    if not x.is_floating_point():
        raise DataError(f"calib_data has dtype {x.dtype}; pass the model's float inputs (normalized images)")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DataError(f"calib_data contains {bad} NaN or infinite values (of {x.numel()}); clean or drop those samples")
    x = x.float()
    was = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(x[:2])
    except Exception as exc:  # the model's own shape errors come as many types
        raise DataError(
            f"calibration samples of shape {tuple(x.shape[1:])} do not fit the model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); pass inputs shaped like the model's training data"
        ) from exc
    finally:
        model.train(was)
    return x


def _resolve(model: nn.Module, targets: Mapping[str, Any] | None, types: tuple[type[nn.Module], ...]) -> dict[str, Any]:
    layers = resolve_targets(model, targets, default=True, types=types)
    mods = dict(model.named_modules())
    bad = [n for n in layers if not isinstance(mods[n], types)]
    if bad:
        raise TargetError(
            f"target(s) {bad} name {[type(mods[n]).__name__ for n in bad]} layers this method cannot quantize; "
            f"it handles {'/'.join(t.__name__ for t in types)}"
        )
    return layers


def _check_range(prec: Precision) -> None:
    if prec.reduce_range == "none" and prec.weight_bits == 8 and prec.act_bits == 8:
        fn = getattr(torch.cpu, "_is_vnni_supported", None)
        if not (fn is not None and fn()):
            raise ConfigError(
                "reduce_range='none' with 8-bit weights and activations overflows the 16-bit sums of this CPU's "
                "integer kernels (no AVX-512 VNNI); use reduce_range='weights' or 'activations'"
            )


def _report_unsupported(
    model: nn.Module, layers: Mapping[str, Any], report: Report, why: str, types: tuple[type[nn.Module], ...],
    skip_bn: bool = False,
) -> None:  # fmt: skip
    done = {e.name for e in report.layers}
    for name, m in model.named_modules():
        if not name or name in layers or name in done:
            continue
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if skip_bn and isinstance(m, nn.BatchNorm2d):
            report.add(name, type(m).__name__, "skipped", "BatchNorm not after a Conv2d: left in float")
            continue
        targeted_out = isinstance(m, types)
        report.add(name, type(m).__name__, "skipped", "excluded by targets: kept in float" if targeted_out else f"{why}; left in float")


# ----------------------------------------------------------------------------- methods
def _swap_linears(model: nn.Module, layers: Mapping[str, Any], report: Report, action: str, make: Any, detail: str) -> nn.Module:
    new = copy.deepcopy(model).eval()
    for name in layers:
        old = new.get_submodule(name)
        q = make(old)
        parent_name, _, attr = name.rpartition(".")
        setattr(new.get_submodule(parent_name) if parent_name else new, attr, q)
        after = sum(t.numel() * t.element_size() for t in q.state_dict().values() if t is not None)
        err = float((q.dequantized_weight() - old.weight.detach()).norm() / old.weight.detach().norm().clamp(min=1e-12))
        report.add(name, "Linear", action, detail,
                   before={"weight_bytes": old.weight.numel() * 4 + (old.bias.numel() * 4 if old.bias is not None else 0), "dtype": "float32"},
                   after={"weight_bytes": after, "dtype": action.split("-")[0], "weight_rel_error": round(err, 5)})  # fmt: skip
    return new


def _cast(model: nn.Module, dtype: torch.dtype, report: Report) -> nn.Module:
    new = copy.deepcopy(model).eval().to(dtype)
    setattr(new, _CAST_HOOKS, str(dtype))

    def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        conv = lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v  # noqa: E731
        return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}

    def post(_m: nn.Module, _a: Any, out: Any) -> Any:
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    new.register_forward_pre_hook(pre, with_kwargs=True)
    new.register_forward_hook(post)
    name = str(dtype).removeprefix("torch.")
    for lname, m in model.named_modules():
        own = [t for t in m.parameters(recurse=False)]
        if own:
            before = sum(t.numel() * 4 for t in own)
            report.add(lname, type(m).__name__, name, "cast; inputs cast on the way in, outputs back to float32",
                       before={"weight_bytes": before, "dtype": "float32"}, after={"weight_bytes": before // 2, "dtype": name})  # fmt: skip
    return new


def seed_dynamic(model: nn.Module, report: Report) -> nn.Module:
    """The seed's exact call, ``torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``,
    on a copy, with its deprecation warnings caught into the report."""
    new = copy.deepcopy(model).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = torch.quantization.quantize_dynamic(new, {nn.Linear}, dtype=torch.qint8)
    msgs = sorted({str(w.message).splitlines()[0] for w in caught})
    report.summary["warnings"] = msgs
    float_mods = dict(model.named_modules())
    for name, _m in new.named_modules():
        if name and isinstance(float_mods.get(name), nn.Linear):
            report.add(name, "Linear", "int8-dynamic-seed", "torch.ao DynamicQuantizedLinear (per-tensor, deprecated API)",
                       before={"dtype": "float32"}, after={"dtype": "qint8"})  # fmt: skip
    return new


@torch.inference_mode()
def _summarize(model: nn.Module, new: nn.Module, report: Report, calib: torch.Tensor | None) -> None:
    counts: dict[str, int] = {}
    for e in report.layers:
        counts[e.action] = counts.get(e.action, 0) + 1
    report.summary["layers"] = counts
    report.summary["skipped"] = [f"{e.name}: {e.detail}" for e in report.skipped]
    if calib is not None:
        x = calib[:256]
        was = model.training
        model.eval()
        ref = model(x)
        model.train(was)
        out = new(x)
        if isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor):
            report.summary["output_rel_error"] = round(float((out.float() - ref).norm() / ref.norm().clamp(min=1e-12)), 6)
            if ref.dim() == 2:
                report.summary["top1_agreement"] = round(float((out.argmax(1) == ref.argmax(1)).float().mean()), 4)
