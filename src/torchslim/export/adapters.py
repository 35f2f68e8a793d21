"""How each quantized Linear type of torchslim describes itself to the ONNX exporter.

A module type either has an ``onnx_spec()`` method returning a
:class:`~torchslim.export.qdq.QuantLinearSpec`, or an adapter here (for the types in
:mod:`torchslim.quantization`, which keep no export code of their own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from torchslim.export.qdq import QuantLinearSpec

_ADAPTERS: dict[str, Callable[[Any], QuantLinearSpec | None]] = {}


def _int8_dynamic(m: Any) -> QuantLinearSpec:
    act = "dynamic-token" if m.activation == "per_token" else "dynamic-tensor"
    return QuantLinearSpec(m.weight_int8, m.weight_scale, m.bias, activation=act)  # type: ignore[arg-type]


def _weight_only(m: Any) -> QuantLinearSpec:
    return QuantLinearSpec(
        m.int_weight(), m.scale.float(), m.bias, group_size=m.group_size, zero_point=m.zero_point, bits=m.bits
    )


def _smoothed(m: Any) -> QuantLinearSpec | None:
    """SmoothQuant's ``inner(x * input_scale)``: the inner layer's spec with the input scale."""
    if hasattr(m.inner, "qparams"):  # a static INT8 layer: the exporter's static path takes it
        return None
    spec = spec_of(m.inner)
    if spec is None:
        w = m.inner.weight.detach()
        spec = QuantLinearSpec(qweight=w, scale=torch.ones(w.shape[0]), bias=m.inner.bias, float_weight=True)
    spec.input_scale = m.input_scale
    return spec


_ADAPTERS["torchslim.quantization.modules.Int8DynamicLinear"] = _int8_dynamic
_ADAPTERS["torchslim.quantization.modules.WeightOnlyLinear"] = _weight_only
_ADAPTERS["torchslim.quantization.smoothing.SmoothedLinear"] = _smoothed


def spec_of(module: nn.Module) -> QuantLinearSpec | None:
    """The module's quantization spec, or ``None`` for modules that are not quantized Linears."""
    fn = getattr(module, "onnx_spec", None)
    if callable(fn):
        return fn()
    cls = type(module)
    adapter = _ADAPTERS.get(f"{cls.__module__}.{cls.__qualname__}")
    return adapter(module) if adapter is not None else None
