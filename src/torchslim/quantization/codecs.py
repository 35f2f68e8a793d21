"""Checkpoint codecs: how torchslim's checkpoint rebuilds each quantized module type.

The checkpoint stores a module's constructor arguments as JSON (``to_config``) and its integer
buffers as safetensors tensors, then rebuilds it with ``from_config`` before ``load_state_dict``.
Registered when :mod:`torchslim.quantization` is imported.

Two states need more than a config: the seed's ``torch.ao`` dynamic Linear keeps its int8 weight
packed (its ``state_dict`` holds a dtype and a tuple, which safetensors cannot store), so its
codec saves the int8 values, scale, zero point and bias as plain tensors and repacks them; an
FP16/BF16 model carries cast hooks on its root, which a model codec re-installs on load.

A static INT8 model made with 8-bit weights and activations (the default on a CPU with AVX-512
VNNI) lists those layers under the model codec ``int8_needs_vnni``; loaded on a CPU without VNNI,
whose ``vpmaddubsw`` would saturate, their weights are re-rounded to 7 bits with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn as nn

from torchslim._version import __version__
from torchslim.checkpoint import (
    _CODECS_BY_CLS,
    _CODECS_BY_KIND,
    _ensure_codecs_loaded,
    register_codec,
    register_model_codec,
)
from torchslim.errors import CheckpointError
from torchslim.layer_report import Report
from torchslim.quantization import modules as qmodules
from torchslim.quantization.api import _CAST_HOOKS, _cast
from torchslim.quantization.modules import (
    Int8DynamicLinear,
    WeightOnlyLinear,
    narrow_weights_to_7_bits,
    saturates_without_vnni,
)


def _int8_dynamic_cfg(m: Int8DynamicLinear) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None, "activation": m.activation}


def _weight_only_cfg(m: WeightOnlyLinear) -> dict[str, Any]:
    return {
        "in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None,
        "bits": m.bits, "group_size": m.group_size,
    }  # fmt: skip


def _seed_dynamic_cfg(m: nnqd.Linear) -> dict[str, Any]:
    w, b = m._weight_bias()
    if w.is_quantized and w.qscheme() not in (torch.per_tensor_affine, torch.per_channel_affine):
        raise CheckpointError(
            f"a dynamic Linear with weight qscheme {w.qscheme()} cannot be saved; quantize with DynamicInt8Config instead"
        )
    dtype = str(m._packed_params.dtype).removeprefix("torch.")
    per_channel = w.is_quantized and w.qscheme() == torch.per_channel_affine
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": b is not None, "dtype": dtype,
            "per_channel": per_channel}  # fmt: skip


def _seed_dynamic_from(c: dict[str, Any]) -> nnqd.Linear:
    m = nnqd.Linear(c["in_features"], c["out_features"], bias_=c["bias"], dtype=getattr(torch, c["dtype"]))
    if c.get("per_channel"):  # its qparams are vectors: give the placeholder weight their shapes
        n = c["out_features"]
        zeros, ones = torch.zeros(n, c["in_features"], dtype=torch.int8), torch.ones(n, dtype=torch.float64)
        w = torch._make_per_channel_quantized_tensor(zeros, ones, torch.zeros(n, dtype=torch.long), 0)
        m.set_weight_bias(w, m._weight_bias()[1])
    return m


def _seed_dynamic_state(m: nnqd.Linear) -> dict[str, torch.Tensor]:
    w, b = m._weight_bias()
    out = {"bias": b.detach()} if b is not None else {}
    if not w.is_quantized:  # dtype=torch.float16 packs float16 values (unpacked as float32)
        return {**out, "weight": w.to(torch.float16)}
    if w.qscheme() == torch.per_tensor_affine:  # 0-dim qparams mark per-tensor, 1-dim per-channel (axis 0)
        scale, zp = torch.tensor(w.q_scale(), dtype=torch.float64), torch.tensor(w.q_zero_point())
    else:
        scale, zp = w.q_per_channel_scales(), w.q_per_channel_zero_points()
    return {**out, "weight": w.int_repr(), "weight_scale": scale, "weight_zero_point": zp}


def _seed_dynamic_load(m: nnqd.Linear, st: dict[str, torch.Tensor]) -> None:
    w, scale, zp = st["weight"], st.get("weight_scale"), st.get("weight_zero_point")
    if scale is not None and zp is not None:
        w = (
            torch._make_per_tensor_quantized_tensor(w, float(scale), int(zp))
            if scale.dim() == 0
            else torch._make_per_channel_quantized_tensor(w, scale, zp, 0)
        )
    m.set_weight_bias(w if w.is_quantized else w.float(), st.get("bias"))


_CAST_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16)}


def _restore_cast(model: nn.Module, dtype: str) -> nn.Module:
    if dtype not in _CAST_DTYPES:
        raise CheckpointError(f"checkpoint casts the model to {dtype}; torchslim {__version__} casts to {sorted(_CAST_DTYPES)}")
    # quantize()'s own cast: the same dtype and the same input/output hooks as before saving.
    return _cast(model, _CAST_DTYPES[dtype], Report("quantize", "cast"))


def _vnni_layers(model: nn.Module) -> list[str] | None:
    names = [n for n, m in model.named_modules() if saturates_without_vnni(m)]
    return names or None


def _check_vnni_layers(model: nn.Module, names: Any) -> nn.Module:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"checkpoint's int8_needs_vnni must be a list of layer names, got {type(names).__name__}")
    return model


def _fit_this_cpu(model: nn.Module, names: list[str]) -> None:
    """On a CPU without VNNI, 7-bit weights for the layers that would saturate (see module doc)."""
    if qmodules._has_vnni():
        return
    mods = dict(model.named_modules())
    bad = [n for n in names if not hasattr(mods.get(n), "weight_int8")]
    if bad:
        raise CheckpointError(f"checkpoint's int8_needs_vnni names {bad[:3]}, which are not INT8 layers of this model")
    for n in names:
        narrow_weights_to_7_bits(mods[n])
    warnings.warn(
        f"this INT8 model was quantized with 8-bit weights and activations on a CPU with AVX-512 VNNI; this CPU has "
        f"no VNNI and its integer kernels would saturate, so the weights of {len(names)} layer(s) were re-rounded to "
        "7 bits (slightly larger error). Quantize on this CPU, or with reduce_range='weights', to avoid it.",
        stacklevel=3,
    )


def register_all() -> None:
    register_codec("int8_dynamic_linear", Int8DynamicLinear, _int8_dynamic_cfg, lambda c: Int8DynamicLinear(**c))
    register_codec("weight_only_linear", WeightOnlyLinear, _weight_only_cfg, lambda c: WeightOnlyLinear(**c))
    register_codec("seed_dynamic_linear", nnqd.Linear, _seed_dynamic_cfg, _seed_dynamic_from,
                   get_state=_seed_dynamic_state, set_state=_seed_dynamic_load)  # fmt: skip
    register_model_codec("cast", lambda m: getattr(m, _CAST_HOOKS, None), _restore_cast)
    register_model_codec("int8_needs_vnni", _vnni_layers, _check_vnni_layers, after_load=_fit_this_cpu)
    register_static()
    from torchslim.quantization.smoothing import SmoothedLinear

    register_codec("smoothed_linear", SmoothedLinear, _smoothed_cfg, _smoothed_from)


def _smoothed_cfg(m: Any) -> dict[str, Any]:
    codec = _CODECS_BY_CLS.get(type(m.inner))
    if codec is None:
        raise CheckpointError(f"cannot save SmoothedLinear around {type(m.inner).__name__}: no checkpoint codec for it")
    return {"in_features": m.in_features, "inner": {"kind": codec.kind, "config": codec.to_config(m.inner)}}


def _smoothed_from(cfg: dict[str, Any]) -> Any:
    from torchslim.quantization.smoothing import SmoothedLinear

    kind = cfg["inner"]["kind"]
    if kind not in _CODECS_BY_KIND:
        _ensure_codecs_loaded(kind)
    if kind not in _CODECS_BY_KIND:
        raise CheckpointError(f"SmoothedLinear wraps module kind {kind!r}, which this torchslim does not know")
    return SmoothedLinear(_CODECS_BY_KIND[kind].from_config(cfg["inner"]["config"]), int(cfg["in_features"]))


def register_static() -> None:
    from torch import nn

    from torchslim.quantization.static_modules import QConv2d, QLinear

    register_codec("qconv2d", QConv2d, lambda m: m.config(), lambda c: QConv2d(**c))
    register_codec("qlinear", QLinear, lambda m: m.config(), lambda c: QLinear(**c))
    # A folded BatchNorm becomes an Identity where the architecture has a BatchNorm.
    register_codec("identity", nn.Identity, lambda m: {}, lambda c: nn.Identity())
