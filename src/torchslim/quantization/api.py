"""``quantize(model, config)``: the one quantization verb; every input is checked before work."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from torchslim.data.protocol import ModelInput, as_data, describe, output_tensor
from torchslim.errors import CompatibilityError, ConfigError, DataError, TargetError
from torchslim.layer_report import Report
from torchslim.methods import CALIBRATION, TRAINING, MethodCall, method_for
from torchslim.modes import kept_mode
from torchslim.quantization import modules as qmodules
from torchslim.quantization.config import (
    BF16Config,
    DynamicInt8Config,
    FP16Config,
    GPTQConfig,
    QATConfig,
    QuantConfig,
    SeedDynamicConfig,
    SmoothQuantConfig,
    StaticInt8Config,
    WeightOnlyConfig,
)  # fmt: skip
from torchslim.quantization.modules import Int8DynamicLinear, WeightOnlyLinear
from torchslim.quantization.static import Precision, quantize_static
from torchslim.quantization.static_modules import QConv2d, QLinear
from torchslim.surgery import avoid_fused_paths, check_finite, weight_read_by_parent
from torchslim.targets import resolve_targets

_QUANT_TYPES = (Int8DynamicLinear, WeightOnlyLinear, QConv2d, QLinear)
_FOREIGN_QUANT = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torchao.")
SUMMARY_SAMPLES = 256  # calibration samples on which the report measures the output error
_CAST_HOOKS = "_torchslim_cast_dtype"


def quantize(
    model: nn.Module,
    config: QuantConfig,
    *,
    calib_data: Any = None,
    targets: Mapping[str, Any] | None = None,
    train_data: Any = None,
    val_data: Any = None,
    input_fn: Any = None,
    quiet: bool = True,
) -> tuple[nn.Module, Report]:
    """Quantize a copy of ``model`` with the method ``config`` names; returns ``(model, report)``.

    * ``calib_data``: input samples: any DataLoader or iterable of batches (tensors, ``(x, y)``
      tuples, dicts), a tensor ``[N, ...]`` or an ``ImageData``, read with ``input_fn`` (see
      :mod:`torchslim.data.protocol`). Required by :class:`StaticInt8Config` and
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
    method = method_for(config, "quantize")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"quantize() needs an nn.Module, got {type(model).__name__}")
    check_not_quantized(model)
    check_finite(model, "quantize")
    report = Report("quantize", method.name)
    if not method.accepts_targets and targets:
        raise ConfigError(
            f"{type(config).__name__} applies to the whole model and takes no targets; use DynamicInt8Config, "
            "StaticInt8Config or WeightOnlyConfig for mixed precision"
        )
    if CALIBRATION in method.needs and calib_data is None:
        raise ConfigError(
            f"{type(config).__name__} needs calib_data: a few hundred representative inputs "
            "(e.g. load_dataset(...).subset(512) or a tensor [N, C, H, W]); "
            "DynamicInt8Config needs none"
        )
    # Read only the samples the method uses: its calibration budget, or the 256 the report's error check runs on.
    limit = getattr(config, "max_calib_samples", None)
    if limit is None and CALIBRATION not in method.needs:
        limit = SUMMARY_SAMPLES
    calib = None if calib_data is None else calib_inputs(calib_data, model, limit, input_fn=input_fn,
                                                         batch_size=getattr(config, "batch_size", 128))  # fmt: skip
    if TRAINING in method.needs and (train_data is None or val_data is None):
        raise ConfigError(f"{type(config).__name__} trains the model: pass train_data= and val_data= (ImageData)")
    call = MethodCall(targets=targets, calib_data=calib, train_data=train_data, val_data=val_data, quiet=quiet, report=report)
    new, report = method.handler(model, config, call)
    _summarize(model, new, report, calib)
    return new, report


# ----------------------------------------------------------------------------- method handlers
# Each is registered for its config class in torchslim/quantization/__init__.py; ``quantize`` has
# checked the model, the targets rule and the data the entry needs before any of them runs.
def cast_method(model: nn.Module, config: FP16Config | BF16Config, call: MethodCall) -> tuple[nn.Module, Report]:
    assert call.report is not None
    return _cast(model, torch.float16 if isinstance(config, FP16Config) else torch.bfloat16, call.report), call.report


def seed_dynamic_method(model: nn.Module, config: SeedDynamicConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    assert call.report is not None
    return seed_dynamic(model, call.report), call.report


def dynamic_int8_method(model: nn.Module, config: DynamicInt8Config, call: MethodCall) -> tuple[nn.Module, Report]:
    report = call.report
    assert report is not None
    layers = _resolve(model, call.targets, (nn.Linear,))
    new = _swap_linears(model, layers, report, "int8-dynamic",
                        lambda m: Int8DynamicLinear.from_float(m, activation=config.activation),
                        f"per-channel int8 weights, {config.activation.replace('_', '-')} int8 activations")  # fmt: skip
    _report_unsupported(model, layers, report, "dynamic INT8 covers nn.Linear; StaticInt8Config quantizes Conv2d", (nn.Linear,))
    return new, report


def weight_only_method(model: nn.Module, config: WeightOnlyConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    report = call.report
    assert report is not None
    layers = _resolve(model, call.targets, (nn.Linear,))
    # A target's value may name that layer's bits (4 or 8): mixed INT8 / INT4 in one step.
    bits = {n: config.bits if v is True else v for n, v in layers.items()}
    bad = {n: b for n, b in bits.items() if isinstance(b, bool) or b not in (4, 8)}
    if bad:
        name, b = next(iter(bad.items()))
        raise TargetError(f"targets: {name}: {b!r} is not a weight-only bit width; give 4 or 8 (or None to keep it in float)")
    new = model
    for b in sorted(set(bits.values())) or [config.bits]:
        group = {n: v for n, v in layers.items() if bits[n] == b}
        new = _swap_linears(new, group, report, f"int{b}-weight-only",
                            lambda m, b=b: WeightOnlyLinear.from_float(m, bits=b, group_size=config.group_size),
                            f"asymmetric int{b}, group {config.group_size}, fp16 scales"
                            f"{', packed 2 per byte' if b == 4 else ''}")  # fmt: skip
    _report_unsupported(model, layers, report, "weight-only quantization covers nn.Linear", (nn.Linear,))
    return new, report


def _static_plan(model: nn.Module, config: StaticInt8Config | QATConfig, call: MethodCall) -> tuple[dict[str, Any], Precision]:
    """The Conv2d/Linear layers to convert and the integer precision, checked against this CPU."""
    rr = config.reduce_range
    if rr == "auto":  # 8 bits each where the integer kernels add in 32 bits (VNNI), else 7-bit weights
        rr = "none" if qmodules._has_vnni() else "weights"
    prec = Precision(config.weight_bits, config.activation_bits, rr, config.per_channel, config.symmetric)
    _check_range(prec)
    layers = _resolve(model, call.targets, (nn.Conv2d, nn.Linear))
    from torchslim.quantization.applies import static_conv_unfit

    mods = dict(model.named_modules())
    for name in list(layers):
        why = static_conv_unfit(mods[name]) if isinstance(mods[name], nn.Conv2d) else None
        if why is None:
            continue
        if name in (call.targets or {}):
            raise TargetError(f"cannot quantize {name}: {why}; remove it from targets")
        del layers[name]  # computed in float, said in the report (zero-padding it would change its output)
        if call.report is not None:
            call.report.add(name, "Conv2d", "skipped", f"{why}; kept in float")
    return layers, prec


def static_int8_method(model: nn.Module, config: StaticInt8Config, call: MethodCall) -> tuple[nn.Module, Report]:
    report, calib = call.report, call.calib_data
    assert report is not None and calib is not None
    layers, prec = _static_plan(model, config, call)
    new = quantize_static(
        model, list(layers), calib, prec=prec, observer=config.observer, batch_size=config.batch_size,
        percentile=config.percentile, auto_samples=config.auto_samples, report=report, fold_bn=config.fold_bn,
    )  # fmt: skip
    _report_unsupported(model, layers, report, "no integer kernel for this layer type", (nn.Conv2d, nn.Linear),
                        skip_bn=config.fold_bn)  # fmt: skip
    return new, report


def qat_method(model: nn.Module, config: QATConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    from torchslim.quantization.qat_flow import run_qat

    report, calib = call.report, call.calib_data
    assert report is not None and calib is not None
    layers, prec = _static_plan(model, config, call)
    new = run_qat(model, list(layers), calib, config, prec, call.train_data, call.val_data, report, quiet=call.quiet)
    _report_unsupported(model, layers, report, "no integer kernel for this layer type", (nn.Conv2d, nn.Linear),
                        skip_bn=config.fold_bn)  # fmt: skip
    return new, report


def smoothquant_method(model: nn.Module, config: SmoothQuantConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    from torchslim.quantization.smoothquant import quantize_smoothquant

    return quantize_smoothquant(model, call.calib_data, config, targets=call.targets)


def gptq_method(model: nn.Module, config: GPTQConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    from torchslim.quantization.gptq import quantize_gptq

    return quantize_gptq(model, call.calib_data, config, targets=call.targets)


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


def calib_inputs(
    data: Any, model: nn.Module, limit: int | None = None, *, input_fn: Any = None, batch_size: int = 128
) -> list[ModelInput]:
    """The calibration batches as the model's arguments, checked before any work: non-empty,
    finite, float inputs, and the model runs on the first batch. At most ``limit`` samples."""
    d = as_data(data, input_fn=input_fn, batch_size=batch_size).bind(model)
    out: list[ModelInput] = []
    total = 0
    for b in d:
        inp = d.inputs(b)
        if limit is not None and total + inp.batch_size > limit:
            inp = inp.resized(limit - total)
        if inp.batch_size == 0 or not inp.tensors():
            continue
        out.append(inp)
        total += inp.batch_size
        if limit is not None and total >= limit:
            break
    if not out:
        raise DataError("calib_data is empty; pass a few hundred representative input samples")
    if not any(t.is_floating_point() for i in out for t in i.tensors()) and all(i.kwargs == {} for i in out):
        raise DataError(
            f"calib_data holds no floating-point inputs ({describe(out[0])}); pass the model's float inputs (normalized images)"
        )
    shapes = {tuple(tuple(t.shape[1:]) for t in i.tensors() if t.is_floating_point()) for i in out}
    if len(shapes) > 1:  # float inputs (images, features) of one model share a sample shape; token ids may not
        raise DataError(f"calibration batches have different sample shapes {sorted(shapes)}; they must all match")
    for i in out:
        for t in i.tensors():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise DataError(f"calib_data contains {bad} NaN or infinite values (of {t.numel()}); clean or drop those samples")
    d_first = as_data([out[0]], input_fn=lambda x: x)
    d_first.check(model, "calib_data")
    return out


def _resolve(model: nn.Module, targets: Mapping[str, Any] | None, types: tuple[type[nn.Module], ...]) -> dict[str, Any]:
    layers = resolve_targets(model, targets, default=True, types=types)
    mods = dict(model.named_modules())
    bad = [n for n in layers if not isinstance(mods[n], types)]
    if bad:
        raise TargetError(
            f"target(s) {bad} name {[type(mods[n]).__name__ for n in bad]} layers this method cannot quantize; "
            f"it handles {'/'.join(t.__name__ for t in types)}"
        )
    kept = weight_read_by_parent(model)
    named = [n for n in layers if n in kept and n in (targets or {})]
    if named:
        raise TargetError(f"cannot quantize {named[0]}: {kept[named[0]]}; remove it from targets")
    return {n: v for n, v in layers.items() if n not in kept}


def _check_range(prec: Precision) -> None:
    if prec.reduce_range == "none" and prec.weight_bits == 8 and prec.act_bits == 8:
        if not qmodules._has_vnni():
            raise ConfigError(
                "reduce_range='none' with 8-bit weights and activations overflows the 16-bit sums of this CPU's "
                "integer kernels (no AVX-512 VNNI); use reduce_range='weights' or 'activations'"
            )


def _report_unsupported(
    model: nn.Module, layers: Mapping[str, Any], report: Report, why: str, types: tuple[type[nn.Module], ...],
    skip_bn: bool = False,
) -> None:  # fmt: skip
    done = {e.name for e in report.layers}
    kept = weight_read_by_parent(model)
    for name, m in model.named_modules():
        if not name or name in done:
            continue
        if name in layers:  # targeted but not converted: static flow never sees layers inside FX leaf modules
            report.add(name, type(m).__name__, "skipped", "not called as a module in the traced graph "
                       "(inside a torch.nn module that torch.fx keeps whole); kept in float")  # fmt: skip
            continue
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if name in kept:
            report.add(name, type(m).__name__, "skipped", kept[name])
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
    off = avoid_fused_paths(new, layers)
    if off:
        report.summary["fused_path_off"] = off
    return new


def _cast(model: nn.Module, dtype: torch.dtype, report: Report) -> nn.Module:
    new = copy.deepcopy(model).eval().to(dtype)
    setattr(new, _CAST_HOOKS, str(dtype))

    def conv(v: Any) -> Any:  # float tensors anywhere in the arguments (dict and tuple inputs included)
        if isinstance(v, torch.Tensor):
            return v.to(dtype) if v.is_floating_point() else v
        if isinstance(v, Mapping):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return type(v)(conv(x) for x in v)
        return v

    def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
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
    kept = weight_read_by_parent(model)
    spec: Any = {nn.Linear}
    if kept:  # the same call, by layer name, without the layers whose parent reads their float weight
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        spec = {n: qconfig for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in kept}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = torch.quantization.quantize_dynamic(new, spec, dtype=torch.qint8)
    for name, why in kept.items():
        report.add(name, "Linear", "skipped", why)
    msgs = sorted({str(w.message).splitlines()[0] for w in caught})
    report.summary["warnings"] = msgs
    float_mods = dict(model.named_modules())
    for name, _m in new.named_modules():
        if name and isinstance(float_mods.get(name), nn.Linear):
            report.add(name, "Linear", "int8-dynamic-seed", "torch.ao DynamicQuantizedLinear (per-tensor, deprecated API)",
                       before={"dtype": "float32"}, after={"dtype": "qint8"})  # fmt: skip
    return new


@torch.inference_mode()
def _summarize(model: nn.Module, new: nn.Module, report: Report, calib: list[ModelInput] | None) -> None:
    counts: dict[str, int] = {}
    for e in report.layers:
        counts[e.action] = counts.get(e.action, 0) + 1
    report.summary["layers"] = counts
    report.summary["skipped"] = [f"{e.name}: {e.detail}" for e in report.skipped]
    if calib is None:
        return
    num = den = agree = n = 0.0
    with kept_mode(model):
        model.eval()
        for inp in calib[: max(1, SUMMARY_SAMPLES // max(1, calib[0].batch_size))]:
            try:
                ref, out = output_tensor(inp(model)).float(), output_tensor(inp(new)).float()
            except DataError:
                return
            if ref.shape != out.shape:
                return
            num += float(((out - ref) ** 2).sum())
            den += float((ref**2).sum())
            if ref.dim() == 2:
                agree += float((out.argmax(1) == ref.argmax(1)).sum())
                n += len(ref)
    report.summary["output_rel_error"] = round((num / max(den, 1e-24)) ** 0.5, 6)
    if n:
        report.summary["top1_agreement"] = round(agree / n, 4)
