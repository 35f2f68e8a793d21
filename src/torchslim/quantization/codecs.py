"""Checkpoint codecs: how torchslim's checkpoint rebuilds each quantized module type.

The checkpoint stores a module's constructor arguments as JSON (``to_config``) and its integer
buffers as safetensors tensors, then rebuilds it with ``from_config`` before ``load_state_dict``.
Registered when :mod:`torchslim.quantization` is imported.
"""

from __future__ import annotations

from typing import Any

from torchslim.checkpoint import register_codec
from torchslim.quantization.modules import Int8DynamicLinear, WeightOnlyLinear


def _int8_dynamic_cfg(m: Int8DynamicLinear) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None, "activation": m.activation}


def _weight_only_cfg(m: WeightOnlyLinear) -> dict[str, Any]:
    return {
        "in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None,
        "bits": m.bits, "group_size": m.group_size,
    }  # fmt: skip


def register_all() -> None:
    register_codec("int8_dynamic_linear", Int8DynamicLinear, _int8_dynamic_cfg, lambda c: Int8DynamicLinear(**c))
    register_codec("weight_only_linear", WeightOnlyLinear, _weight_only_cfg, lambda c: WeightOnlyLinear(**c))
    register_static()


def register_static() -> None:
    from torch import nn

    from torchslim.quantization.static_modules import QConv2d, QLinear

    register_codec("qconv2d", QConv2d, lambda m: m.config(), lambda c: QConv2d(**c))
    register_codec("qlinear", QLinear, lambda m: m.config(), lambda c: QLinear(**c))
    # A folded BatchNorm becomes an Identity where the architecture has a BatchNorm.
    register_codec("identity", nn.Identity, lambda m: {}, lambda c: nn.Identity())
