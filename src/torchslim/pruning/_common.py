"""Checks and measurements shared by the pruning methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from torchslim.data.protocol import ModelInput, as_data, describe
from torchslim.errors import CompatibilityError, ConfigError, DataError
from torchslim.modes import unfused_attention

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_QUANT_MODULE_PREFIXES = (
    "torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.ao.nn.qat",
    "torch.nn.qat", "torch.ao.nn.intrinsic.qat", "torchao.", "torchslim.quantization",
)  # fmt: skip


def check_not_quantized(model: nn.Module) -> None:
    """Raise :class:`CompatibilityError` naming the first quantized layer of ``model``.

    Pruning must come before quantization: quantized layers hold integer or packed weights whose
    zeros are not the float zeros pruning creates, and fake-quant/observer modules would record
    the pre-pruning ranges.
    """
    from torch.ao.quantization import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    for name, m in model.named_modules():
        mod = type(m).__module__ or ""
        what = None
        if mod.startswith(_QUANT_MODULE_PREFIXES):
            what = f"a {type(m).__name__} from {mod}"
        elif isinstance(m, FakeQuantizeBase | ObserverBase):
            what = f"a {type(m).__name__} (quantization-aware training or calibration module)"
        else:
            for pname, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
                data = t.data if isinstance(t, nn.Parameter) else t
                if data.is_quantized or type(data) not in (torch.Tensor, nn.Parameter):
                    what = f"quantized tensor {pname} ({type(data).__name__}, {data.dtype})"
                    break
        if what is not None:
            raise CompatibilityError(
                f"the model is already quantized: layer {name or '<root>'} is {what}. Prune the FP32 model "
                "first, then quantize (torchslim.compress runs the steps in that order)"
            )


def to_batches(
    calib_data: Any, max_samples: int, batch_size: int, *, need_labels: bool = False, what: str = "calibration",
    model: nn.Module | None = None,
) -> list[tuple[ModelInput, Any]]:
    """The first ``max_samples`` samples of any data (see :mod:`torchslim.data.protocol`) as
    ``(model input, target or None)`` batches; an ``(inputs, labels)`` tensor pair is accepted too."""
    if calib_data is None:
        raise ConfigError(f"this method needs {what} data: pass calib_data= (a DataLoader, batches or a tensor)")
    if isinstance(calib_data, tuple) and len(calib_data) == 2 and all(isinstance(t, torch.Tensor) for t in calib_data):
        x, y = calib_data
        if len(y) != len(x):
            raise DataError(f"{what} data has {len(x)} inputs but {len(y)} labels")
        calib_data = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    d = as_data(calib_data, batch_size=batch_size)
    if model is not None:
        d.bind(model)  # dict batches follow the model's forward signature
    batches: list[tuple[ModelInput, Any]] = []
    n = 0
    for b in d:
        if n >= max_samples:
            break
        inp, y = d.inputs(b), d.target(b)
        if n + inp.batch_size > max_samples:
            keep = max_samples - n
            inp, y = inp.resized(keep), y[:keep] if isinstance(y, torch.Tensor) else y
        batches.append((inp, y))
        n += inp.batch_size
    if not batches or n == 0:
        raise DataError(f"{what} data is empty")
    for inp, _ in batches:
        for t in inp.tensors():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise DataError(f"{what} data contains NaN or infinite values")
    if need_labels and any(y is None for _, y in batches):
        raise DataError(f"this method needs labelled {what} data: batches as (inputs, labels), or target_fn")
    return batches


def example_input(calib_data: Any, input_shape: list[int] | None, model: nn.Module | None = None) -> ModelInput | None:
    """One sample (batch of 1) to trace the model with, or None when nothing tells the shape."""
    if calib_data is not None:
        return to_batches(calib_data, 1, 1, model=model)[0][0].resized(1)
    if input_shape is not None:
        return ModelInput((torch.randn(1, *input_shape),))
    return None


@dataclass
class Profile:
    """What one forward pass on one sample tells: total MACs, MACs per layer, output layers."""

    macs: int | None = None
    layer_macs: dict[str, int] = field(default_factory=dict)
    output_layers: list[str] = field(default_factory=list)


@torch.no_grad()
def profile(model: nn.Module, example: ModelInput | Any) -> Profile:
    """Dense MACs (FlopCounterMode, as :func:`torchslim.measure.count_macs`) in one forward pass,
    the MACs of each Conv/Linear layer (forward hooks), and which of those layers produce the
    model's output (identity of the returned tensor). ``example``: a :class:`ModelInput`, or a
    tensor, tuple of arguments or dict of keyword arguments."""
    if example is None:
        return Profile()
    if not isinstance(example, ModelInput):
        example = ModelInput.of(example)
    from torch.utils.flop_counter import FlopCounterMode

    per_layer: dict[str, int] = {}
    produced: list[tuple[Any, str]] = []  # keeps the tensors alive so identity checks are sound

    def hook(name: str) -> Any:
        def fn(m: nn.Module, inp: Any, o: torch.Tensor) -> None:
            produced.append((o, name))
            b = inp[0].shape[0] if inp[0].dim() > 1 else 1
            if isinstance(m, nn.Linear):
                per_layer[name] = per_layer.get(name, 0) + o.numel() // b * m.in_features
            else:
                w = m.weight
                per_layer[name] = per_layer.get(name, 0) + o.numel() // b * (w.shape[1] * w[0, 0].numel())

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    was = model.training
    model.eval()
    try:
        with unfused_attention(), FlopCounterMode(display=False) as fc:
            out = example(model)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DataError(
            f"the model does not run on {describe(example)} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); pass calib_data or input_shape matching the model's input"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    outs = out if isinstance(out, tuple | list) else (list(out.values()) if isinstance(out, dict) else [out])
    outputs = [name for o in outs for t, name in produced if t is o]
    return Profile(fc.get_total_flops() // 2, per_layer, outputs)


def effective(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor the layer computes with (``orig * mask`` under pruning reparametrization)."""
    if hasattr(module, name + "_orig"):
        return getattr(module, name + "_orig").detach() * getattr(module, name + "_mask")
    return getattr(module, name).detach()


def tensor_sparsity(t: torch.Tensor) -> float:
    return float((t == 0).sum()) / max(1, t.numel())


def is_pruned(module: nn.Module, name: str = "weight") -> bool:
    return any(
        isinstance(h, torch_prune.BasePruningMethod) and h._tensor_name == name for h in module._forward_pre_hooks.values()
    )


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on models under pruning masks.

    After a forward pass with autograd on, ``torch.nn.utils.prune`` leaves ``weight`` as a
    non-leaf tensor (``weight_orig * weight_mask``), which ``deepcopy`` refuses. The copy gets a
    detached value instead; its own pre-hook recomputes it at the next forward. The original
    model is not modified.
    """
    import copy

    memo: dict[int, Any] = {}
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                t = getattr(m, hook._tensor_name, None)
                if isinstance(t, torch.Tensor) and not t.is_leaf:
                    memo[id(t)] = t.detach().clone()
    return copy.deepcopy(model, memo)
