"""SmoothQuant: move activation outliers into the weights before INT8 quantization.

Transformer activations have a few channels far larger than the rest (LayerNorm outputs of
BERT-like models especially); one scale per token then wastes most levels on them. SmoothQuant
(Xiao et al., 2023) divides input channel ``j`` by ``s_j = max|X_j|^a / max|W_j|^(1-a)`` and
multiplies weight column ``j`` by ``s_j``: the product is unchanged, the activation range is
flattened, the weight range grows a little. The division is folded into the LayerNorm that
feeds the Linear layers (its weight and bias), so inference pays nothing.

Which LayerNorm feeds which Linear is found by running one batch with hooks (the Linear's
input *is* the LayerNorm's output tensor), so no architecture table is needed.

:class:`SmoothedLinear` keeps the division explicit. In pre-LayerNorm models the vector could be
folded into the LayerNorm, but BERT-like encoders are post-LayerNorm: the LayerNorm output is
also the residual stream, so folding would change the model. The multiply costs one elementwise
pass and keeps the rewrite exact for every architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn as nn

from torchslim.quantization.calibrate import CalibrationBatch, LinearStats


@torch.inference_mode()
def layernorm_consumers(model: nn.Module, batch: CalibrationBatch) -> dict[str, list[str]]:
    """``{layernorm name: [Linear names whose input is exactly its output]}``."""
    outputs: list[tuple[str, torch.Tensor]] = []  # keeps the tensors alive so identity is safe
    consumers: dict[str, list[str]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: outputs.append((name, o))))
        elif isinstance(m, nn.Linear):

            def pre(mod: nn.Module, inp: tuple[torch.Tensor, ...], name: str = name) -> None:
                for ln, o in reversed(outputs):
                    if inp[0] is o:
                        consumers.setdefault(ln, [])
                        if name not in consumers[ln]:
                            consumers[ln].append(name)
                        return

            hooks.append(m.register_forward_pre_hook(pre))
    try:
        batch(model.eval())
    finally:
        for h in hooks:
            h.remove()
    return consumers


def smoothing_scales(act_absmax: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """``s = max|X|^alpha / max|W|^(1 - alpha)`` per input channel (clamped away from 0).

    >>> s = smoothing_scales(torch.tensor([8.0, 1.0]), [torch.ones(3, 2)], 0.5)
    >>> [round(v, 3) for v in s.tolist()]
    [2.828, 1.0]
    """
    w_absmax = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).clamp_min(1e-5)
    s = act_absmax.clamp_min(1e-5).pow(alpha) / w_absmax.pow(1 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def apply_smoothing(model: nn.Module, groups: dict[str, list[str]], stats: dict[str, LinearStats], alpha: float) -> dict[str, float]:
    """Fold SmoothQuant scales into each LayerNorm and its consumer Linears, in place.

    Returns ``{linear name: activation range reduction (max|X| before / after)}``.
    """
    report: dict[str, float] = {}
    for ln_name, lin_names in groups.items():
        ln = model.get_submodule(ln_name)
        lins = [model.get_submodule(n) for n in lin_names]
        act = stats[lin_names[0]].absmax
        s = smoothing_scales(act, [lin.weight for lin in lins], alpha)
        if ln.weight is None:  # no affine part to fold into
            continue
        ln.weight.div_(s)
        if ln.bias is not None:
            ln.bias.div_(s)
        for n, lin in zip(lin_names, lins, strict=True):
            lin.weight.mul_(s)
            report[n] = float(act.max() / (act / s).max())
    return report


@torch.inference_mode()
def shared_input_groups(model: nn.Module, batch: CalibrationBatch, names: Sequence[str]) -> list[list[str]]:
    """Groups of the named Linear layers that read the very same input tensor (e.g. q/k/v).

    A group shares one smoothing vector, so the exported graph scales and quantizes that input
    once for all of its layers.
    """
    seen: list[tuple[torch.Tensor, list[str]]] = []  # keeps inputs alive, so identity is safe
    hooks = []
    for n in names:

        def pre(mod: nn.Module, inp: tuple[torch.Tensor, ...], n: str = n) -> None:
            for t, group in seen:
                if inp[0] is t:
                    group.append(n)
                    return
            seen.append((inp[0], [n]))

        hooks.append(model.get_submodule(n).register_forward_pre_hook(pre))
    try:
        batch(model.eval())
    finally:
        for h in hooks:
            h.remove()
    return [g for _, g in seen]


class SmoothedLinear(nn.Module):
    """``inner(x * input_scale)``: ``inner`` is a Linear (float or quantized) whose weight
    columns were multiplied by ``1 / input_scale``.

    >>> lin = nn.Linear(4, 2)
    >>> s = torch.tensor([0.5, 1.0, 2.0, 4.0])
    >>> sm = SmoothedLinear.wrap(lin, s)
    >>> x = torch.randn(3, 4)
    >>> bool(torch.allclose(sm(x), lin(x), atol=1e-6))
    True
    """

    speed_note: ClassVar[str] = "SmoothQuant layers rescale their input on every call (one elementwise multiply per layer)"

    def __init__(self, inner: nn.Module, in_features: int) -> None:
        super().__init__()
        self.inner = inner
        self.in_features = in_features
        self.out_features = int(getattr(inner, "out_features", 0))
        self.register_buffer("input_scale", torch.ones(in_features))

    @classmethod
    @torch.no_grad()
    def wrap(cls, linear: nn.Linear, smooth: torch.Tensor) -> SmoothedLinear:
        """A float ``SmoothedLinear`` equal to ``linear``: ``x / smooth`` feeds ``W * smooth``."""
        inner = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        inner.weight.copy_(linear.weight * smooth)
        if linear.bias is not None:
            inner.bias.copy_(linear.bias)
        m = cls(inner, linear.in_features)
        m.input_scale.copy_(1.0 / smooth)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.input_scale)
