"""Quantization: FP16/BF16 casts, INT8 dynamic and static, weight-only INT8/INT4 (round to nearest
or GPTQ), SmoothQuant INT8 of Linear layers (per-token / per-tensor / static activations), QAT.

``quantize(model, config, calib_data=..., targets=...) -> (model, report)``, one config class per
method (``QuantConfig`` is their base and not a method). Integer layers store integer weights,
which torchslim's checkpoint saves and reloads (see ``codecs``).

Kernels, measured on this project's CPUs (x86-64, 2 threads; AVX2 without VNNI on the dev
machines) before choosing:

* oneDNN's integer convolution / matmul (``torch.ops.onednn.qconv_pointwise``,
  ``qconv2d_pointwise.binary``, ``qlinear_pointwise``), called eagerly on plain ``uint8``/``int8``
  tensors - the kernels PT2E + Inductor lowers to, without ``torch.compile`` or the deprecated
  quantized tensor types. Chosen for static INT8, QAT and dynamic INT8. Keeping activations as
  integers between layers and fusing ReLU and the residual add into the convolution is what makes
  ResNets faster than FP32 (the peers measured in ENVIRONMENT.md quantize/dequantize around every
  add and are slower than FP32 there).
* ``torch._int_mm`` on the CPU is a reference kernel (60-100x slower than SGEMM here);
  ``_weight_int8pack_mm`` / ``_weight_int4pack_mm_for_cpu`` with float32 inputs were 40-60x slower
  than dequantize + SGEMM, so weight-only layers dequantize on the fly.
* FBGEMM's ``quantized::linear_dynamic`` is fast but needs the deprecated quantized tensor types;
  it is what the seed's ``torch.quantization.quantize_dynamic`` runs (``SeedDynamicConfig``).
"""

from typing import Any

from torchslim.methods import CALIBRATION, ON_FLOAT_WEIGHTS, QUANTIZED, TRAINING, register_method
from torchslim.quantization import api as _api
from torchslim.quantization import applies as _applies
from torchslim.quantization.api import check_not_quantized, quantize
from torchslim.quantization.codecs import register_all as _register_codecs
from torchslim.quantization.config import (
    BF16Config,
    DynamicInt8Config,
    FP16Config,
    GPTQConfig,
    QATConfig,
    SeedDynamicConfig,
    SmoothQuantConfig,
    StaticInt8Config,
    WeightOnlyConfig,
)  # fmt: skip
from torchslim.quantization.config import (
    QuantConfig as QuantConfig,
)
from torchslim.quantization.gptq import quantize_gptq
from torchslim.quantization.modules import (
    Int8DynamicLinear,
    WeightOnlyLinear,
    compile_int8,
    timed_runtime,
)
from torchslim.quantization.smoothing import SmoothedLinear
from torchslim.quantization.smoothquant import quantize_smoothquant
from torchslim.quantization.static_modules import QConv2d, QLinear, QTensor


# One entry per method: quantize() dispatches on the config's type, recipes and the CLI use the
# name (the config's ``method``). Every method ends in low-precision or integer layers (QAT
# converts at its end); the codecs rebuild those layers from a checkpoint. ``applies`` says which
# layers a method can take and why not (torchslim.inspect reads it; see quantization/applies.py).
def _register(cls: type[QuantConfig], handler: Any, **kw: Any) -> None:
    register_method(cls, verb="quantize", handler=handler, produces={QUANTIZED}, forbidden_after=ON_FLOAT_WEIGHTS,
                    codecs=_register_codecs, **kw)  # fmt: skip


_register(FP16Config, _api.cast_method, accepts_targets=False)
_register(BF16Config, _api.cast_method, accepts_targets=False)
_register(DynamicInt8Config, _api.dynamic_int8_method,
          applies=_applies.int8_dynamic, applies_detail=_applies.int8_dynamic_detail)  # fmt: skip
_register(SeedDynamicConfig, _api.seed_dynamic_method, accepts_targets=False)
_register(StaticInt8Config, _api.static_int8_method, needs={CALIBRATION},
          applies=_applies.int8_static, applies_detail=_applies.int8_static_detail)  # fmt: skip
_register(WeightOnlyConfig, _api.weight_only_method,
          applies=_applies.weight_only, applies_detail=_applies.weight_only_detail)  # fmt: skip
_register(QATConfig, _api.qat_method, needs={CALIBRATION, TRAINING})
_register(SmoothQuantConfig, _api.smoothquant_method, needs={CALIBRATION})
_register(GPTQConfig, _api.gptq_method, needs={CALIBRATION})

__all__ = [
    "BF16Config", "DynamicInt8Config", "FP16Config", "GPTQConfig", "Int8DynamicLinear", "QATConfig", "QConv2d",
    "QLinear", "QTensor", "SeedDynamicConfig", "SmoothQuantConfig", "SmoothedLinear", "StaticInt8Config",
    "WeightOnlyConfig", "WeightOnlyLinear", "check_not_quantized", "compile_int8", "quantize", "quantize_gptq",
    "quantize_smoothquant", "timed_runtime",
]  # fmt: skip
