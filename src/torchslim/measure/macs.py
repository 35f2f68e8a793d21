"""MACs per inference, counted with torch's own FlopCounterMode (MACs = FLOPs / 2).

FlopCounterMode counts at the aten level, so it follows any architecture (residuals,
torchvision, transformers) without per-module rules. It has no formula for integer kernels
(oneDNN's quantized convolution and GEMM, FBGEMM's dynamic linear), and for weight-only layers
it would count the dequantization instead of the product. So any module that is not a plain
``nn.Linear`` / ``nn.Conv2d`` but carries their shape attributes (``in_features`` /
``out_features``, or ``in_channels`` / ``kernel_size`` / ``stride`` / ``padding`` /
``dilation`` / ``groups``) -- every quantized, weight-only or wrapped layer -- is counted by the
dense formula of its shape instead of by what runs inside it. An INT8 model therefore reports
the same MACs as its FP32 original: MACs count multiply-accumulates, whatever their precision.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from torchslim.data.protocol import ModelInput
from torchslim.modes import kept_mode, unfused_attention

_CONV_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


def _shape_macs(m: nn.Module, x: Any) -> int | None:
    """The dense MACs of a Linear- or Conv2d-shaped module on input ``x``; None for other modules."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return None
    if hasattr(m, "in_features") and hasattr(m, "out_features"):
        return math.prod(shape) // max(int(m.in_features), 1) * int(m.in_features) * int(m.out_features)
    if all(hasattr(m, a) for a in _CONV_ATTRS) and len(shape) == 4:
        k, s, p, d = (list(v) if isinstance(v, (list, tuple)) else [v, v] for v in
                      (m.kernel_size, m.stride, m.padding, m.dilation))  # fmt: skip
        if isinstance(m.padding, str):
            return None
        ho = (shape[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        wo = (shape[3] + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        return shape[0] * int(m.out_channels) * ho * wo * int(m.in_channels) // int(m.groups) * k[0] * k[1]
    return None


def _by_shape(m: nn.Module) -> bool:
    if type(m) in (nn.Linear, nn.Conv2d):
        return False  # FlopCounterMode counts these exactly
    return (hasattr(m, "in_features") and hasattr(m, "out_features")) or all(hasattr(m, a) for a in _CONV_ATTRS)


@torch.inference_mode()
def count_macs(model: nn.Module, example: Any) -> int:
    """MACs of one forward pass on ``example`` (a tensor, tuple, or dict of kwargs). The model's
    training mode is restored afterwards.

    >>> from torchslim.models import create_model
    >>> count_macs(create_model("lenet300"), torch.zeros(1, 1, 28, 28))
    266200
    >>> from torchslim.quantization import DynamicInt8Config, quantize
    >>> q, _ = quantize(create_model("lenet300"), DynamicInt8Config())
    >>> count_macs(q, torch.zeros(1, 1, 28, 28))
    266200
    """
    adjust = [0]  # MACs to add: each shape-counted module's formula minus what the counter saw inside it
    stack: list[tuple[int, int] | None] = []
    hooks = []

    def pre(m: nn.Module, args: tuple[Any, ...]) -> None:
        macs = None if stack or not args else _shape_macs(m, args[0])
        stack.append(None if macs is None else (macs, fc.get_total_flops()))

    def post(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        entry = stack.pop()
        if entry is not None:
            macs, flops0 = entry
            adjust[0] += macs - (fc.get_total_flops() - flops0) // 2

    for m in model.modules():
        if _by_shape(m):
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with kept_mode(model), unfused_attention(), FlopCounterMode(display=False) as fc:
            model.eval()
            ModelInput.of(example)(model)
    finally:
        for h in hooks:
            h.remove()
    return fc.get_total_flops() // 2 + adjust[0]
