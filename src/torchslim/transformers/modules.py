"""Layers the transformer methods add around torchslim's quantized Linear modules.

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


class StaticInt8Linear(nn.Module):
    """INT8 Linear with a calibrated, fixed activation scale and zero point (uint8, asymmetric).

    Weights are per-channel symmetric INT8 (as in :class:`torchslim.quantization.Int8DynamicLinear`,
    whose weight buffers it shares the layout of). torchslim.quantization's static layers are
    planned on an FX graph, which Hugging Face encoders do not give; this one quantizes its own
    float input, so it drops into any forward. Runs oneDNN's u8 x s8 GEMM.

    >>> lin = nn.Linear(16, 8)
    >>> q = StaticInt8Linear.from_float(lin, act_range=(-3.0, 3.0))
    >>> x = torch.randn(4, 16).clamp(-3, 3)
    >>> bool((q(x) - lin(x)).abs().max() < 0.1)
    True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("act_scale", torch.ones(()))
        self.register_buffer("act_zero_point", torch.zeros((), dtype=torch.int64))
        self.register_buffer("act_qmax", torch.full((), 255, dtype=torch.int64))
        self.register_buffer("_w_zp", torch.zeros(out_features, dtype=torch.int64), persistent=False)
        self._packed: torch.Tensor | None = None
        self._packed_key: tuple[int, int] | None = None

    @classmethod
    def from_float(cls, linear: nn.Linear, *, act_range: tuple[float, float]) -> StaticInt8Linear:
        from torchslim.quantization.modules import act_qmax, quantize_weight_per_channel
        from torchslim.quantization.observers import qparams

        m = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q, s = quantize_weight_per_channel(linear.weight)
        m.weight_int8.copy_(q)
        m.weight_scale.copy_(s)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        # 8-bit activations with AVX-512 VNNI, 7-bit without: the u8 x s8 pair sums of
        # vpmaddubsw saturate int16 otherwise (see torchslim.quantization.modules.act_qmax).
        bits = 8 if act_qmax() == 127 else 7
        scale, zp = qparams(*act_range, bits=bits)
        m.act_scale.fill_(scale)
        m.act_zero_point.fill_(zp)
        m.act_qmax.fill_(2**bits - 1)
        return m

    def input_levels(self) -> int:
        """Largest unsigned level of the quantized input (255: 8-bit, 127: 7-bit)."""
        return int(self.act_qmax)

    def __deepcopy__(self, memo: dict[int, Any]) -> StaticInt8Linear:
        new = StaticInt8Linear(self.in_features, self.out_features, self.bias is not None)
        new.load_state_dict(self.state_dict())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # torchslim.quantization.compile_int8 freezes this prepack
            packed = torch.ops.onednn.qlinear_prepack(self.weight_int8, None)
        else:
            key = (self.weight_int8.data_ptr(), self.weight_int8._version)
            if self._packed is None or self._packed_key != key:
                self._packed = torch.ops.onednn.qlinear_prepack(self.weight_int8, None)
                self._packed_key = key
            packed = self._packed
        # Scale and zero point stay tensors (no host sync, and traceable by torch.compile).
        zp = self.act_zero_point.to(torch.int32)
        qx = torch.clamp(torch.round(x.reshape(-1, self.in_features).float() / self.act_scale) + zp, 0, self.act_qmax)
        y = torch.ops.onednn.qlinear_pointwise.tensor(
            qx.to(torch.uint8), self.act_scale, zp, packed, self.weight_scale, self._w_zp, self.bias, 1.0, 0, torch.float32, "none", [], ""
        )
        return y.reshape(*x.shape[:-1], self.out_features)

    def onnx_spec(self) -> QuantLinearSpec:
        return QuantLinearSpec(self.weight_int8, self.weight_scale, self.bias, activation="static",
                               act_scale=float(self.act_scale), act_zero_point=int(self.act_zero_point))  # fmt: skip


register_codec(
    "static_int8_linear", StaticInt8Linear,
    lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
    lambda c: StaticInt8Linear(**c),
)  # fmt: skip
