"""Quantization: FP16/BF16, INT8 dynamic and static, weight-only INT8/INT4, QAT on integer kernels."""

from torchslim.quantization.codecs import register_all as _register_codecs
from torchslim.quantization.modules import Int8DynamicLinear, WeightOnlyLinear

_register_codecs()

__all__ = ["Int8DynamicLinear", "WeightOnlyLinear"]
