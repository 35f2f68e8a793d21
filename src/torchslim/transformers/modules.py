"""The layer the transformer methods add around torchslim's quantized Linear modules.

:class:`SmoothedLinear` multiplies its input by a per-channel vector before an inner layer
(SmoothQuant's migration). In pre-LayerNorm models that vector could be folded into the
LayerNorm, but BERT-like encoders are post-LayerNorm: the LayerNorm output is also the residual
stream, so folding would change the model. The multiply stays explicit; it costs one
elementwise pass and keeps the rewrite exact for every architecture.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from torchslim.checkpoint import _CODECS_BY_CLS, _CODECS_BY_KIND, register_codec
from torchslim.errors import CheckpointError
from torchslim.export.adapters import spec_of
from torchslim.export.qdq import QuantLinearSpec


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

    def onnx_spec(self) -> QuantLinearSpec | None:
        if hasattr(self.inner, "qparams"):  # a static INT8 layer: the exporter's static path takes it
            return None
        spec = spec_of(self.inner)
        if spec is None:
            w = self.inner.weight.detach()
            spec = QuantLinearSpec(qweight=w, scale=torch.ones(w.shape[0]), bias=self.inner.bias, float_weight=True)
        spec.input_scale = self.input_scale
        return spec


def _smoothed_cfg(m: SmoothedLinear) -> dict[str, Any]:
    codec = _CODECS_BY_CLS.get(type(m.inner))
    if codec is None:
        raise CheckpointError(f"cannot save SmoothedLinear around {type(m.inner).__name__}: no checkpoint codec for it")
    return {"in_features": m.in_features, "inner": {"kind": codec.kind, "config": codec.to_config(m.inner)}}


def _smoothed_from(cfg: dict[str, Any]) -> SmoothedLinear:
    from torchslim.checkpoint import _ensure_codecs_loaded

    kind = cfg["inner"]["kind"]
    if kind not in _CODECS_BY_KIND:
        _ensure_codecs_loaded(kind)
    if kind not in _CODECS_BY_KIND:
        raise CheckpointError(f"SmoothedLinear wraps module kind {kind!r}, which this torchslim does not know")
    return SmoothedLinear(_CODECS_BY_KIND[kind].from_config(cfg["inner"]["config"]), int(cfg["in_features"]))


register_codec("smoothed_linear", SmoothedLinear, _smoothed_cfg, _smoothed_from)
