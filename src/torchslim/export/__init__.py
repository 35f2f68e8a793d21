"""ONNX export of FP32 and quantized models, checked in ONNX Runtime against PyTorch."""

from torchslim.export.onnx import ExportConfig, ExportResult, OrtEncoder, export_onnx, ort_session
from torchslim.export.qdq import QuantLinearSpec

__all__ = ["ExportConfig", "ExportResult", "OrtEncoder", "QuantLinearSpec", "export_onnx", "ort_session"]
