"""Quantization-aware training: fake quantization with a straight-through estimator.

The float model (BatchNorm folded) is traced; a fake-quantizer is inserted at exactly the
activations the static INT8 model quantizes, and every targeted Conv2d/Linear fake-quantizes its
weight as the integer model will. The result trains with :func:`torchslim.training.fit` (the one
loop) and is then converted to the real integer model with the learned ranges.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.quantization.graph import Plan, insert_points, trace
from torchslim.quantization.observers import ActivationStats
from torchslim.quantization.static import Precision


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quant_weight(w: torch.Tensor, prec: Precision) -> torch.Tensor:
    """Symmetric per-channel (or per-layer) fake quantization of a weight, STE gradient."""
    qmax = prec.weight_qmax
    if prec.per_channel:
        amax = w.detach().abs().reshape(w.shape[0], -1).amax(1)
    else:
        amax = w.detach().abs().max().expand(w.shape[0])
    scale = (amax / qmax).clamp(min=1e-12).view((-1,) + (1,) * (w.dim() - 1))
    return torch.clamp(_round_ste(w / scale), -qmax - 1, qmax) * scale


class FakeQuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with its fake-quantized weight (training only)."""

    prec: Precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quant_weight(self.weight, self.prec), self.bias)


class FakeQuantLinear(nn.Linear):
    """``nn.Linear`` that multiplies with its fake-quantized weight (training only)."""

    prec: Precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant_weight(self.weight, self.prec), self.bias)


def as_fake_quant(m: nn.Module, prec: Precision) -> nn.Module:
    """A fake-quant twin sharing ``m``'s parameters."""
    cls = FakeQuantConv2d if isinstance(m, nn.Conv2d) else FakeQuantLinear
    new = cls.__new__(cls)
    new.__dict__ = m.__dict__.copy()
    new._parameters = m._parameters  # same Parameter objects: training updates the original
    new.prec = prec
    return new


class ActFakeQuant(nn.Module):
    """Activation fake-quantizer. Ranges follow a moving average of min/max while training, or,
    with ``learn_scale``, the scale is a trained parameter (LSQ: gradient through the rounding
    by the straight-through estimator, Esser et al. 2020) and the zero point stays fixed."""

    def __init__(self, point: str, lo: float, hi: float, prec: Precision, learn_scale: bool) -> None:
        super().__init__()
        self.point, self.prec, self.learn_scale = point, prec, learn_scale
        self.register_buffer("lo", torch.tensor(float(lo)))
        self.register_buffer("hi", torch.tensor(float(hi)))
        s, zp = prec.act_qparams(lo, hi)
        self.register_buffer("zp", torch.tensor(float(zp)))
        self.log_scale = nn.Parameter(torch.tensor(float(s)).log(), requires_grad=learn_scale)

    def qparams(self) -> tuple[float, int]:
        if self.learn_scale:
            return float(self.log_scale.detach().exp()), int(self.zp)
        return self.prec.act_qparams(float(self.lo), float(self.hi))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.prec.act_levels
        if self.learn_scale:
            s = self.log_scale.exp()
            zp = self.zp
        else:
            if self.training:
                with torch.no_grad():
                    self.lo.add_(0.01 * (x.min() - self.lo))
                    self.hi.add_(0.01 * (x.max() - self.hi))
            s_f, zp_i = self.qparams()
            s, zp = torch.tensor(s_f), torch.tensor(float(zp_i))
        q = torch.clamp(_round_ste(x / s) + zp, 0, levels)
        return (q - zp) * s


def prepare_qat(
    model: nn.Module, plan: Plan, stats: dict[str, ActivationStats], prec: Precision, observer: str, learn_scales: bool
) -> tuple[torch.fx.GraphModule, dict[str, ActFakeQuant]]:
    """The trainable fake-quant graph of the (folded) float ``model``; shares its parameters."""
    gm = trace(model)

    def factory(point: str) -> ActFakeQuant:
        lo, hi = stats[point].range(observer, bits=prec.act_bits, symmetric=prec.symmetric)
        return ActFakeQuant(point, lo, hi, prec, learn_scales)

    points: dict[str, Any] = insert_points(gm, plan.observe, factory)
    for name in plan.layers:
        parent_name, _, attr = name.rpartition(".")
        parent = gm.get_submodule(parent_name) if parent_name else gm
        setattr(parent, attr, as_fake_quant(getattr(parent, attr), prec))
    gm.recompile()
    return gm, points
