"""Quantization: FP16/BF16 casts, INT8 dynamic and static, weight-only INT8/INT4, QAT.

``quantize(model, config, calib_data=..., targets=...) -> (model, report)``, one config class per
method. Integer layers run oneDNN's integer kernels on the CPU and store integer weights, which
torchslim's checkpoint saves and reloads (see ``codecs``).
"""

from torchslim.quantization.api import check_not_quantized, quantize
from torchslim.quantization.codecs import register_all as _register_codecs
from torchslim.quantization.config import (
    BF16Config,
    DynamicInt8Config,
    FP16Config,
    QATConfig,
    QuantConfig,
    SeedDynamicConfig,
    StaticInt8Config,
    WeightOnlyConfig,
)  # fmt: skip
from torchslim.quantization.modules import Int8DynamicLinear, WeightOnlyLinear
from torchslim.quantization.static_modules import QConv2d, QLinear, QTensor

_register_codecs()

__all__ = [
    "BF16Config", "DynamicInt8Config", "FP16Config", "Int8DynamicLinear", "QATConfig", "QConv2d", "QLinear",
    "QTensor", "QuantConfig", "SeedDynamicConfig", "StaticInt8Config", "WeightOnlyConfig", "WeightOnlyLinear",
    "check_not_quantized", "quantize",
]  # fmt: skip
