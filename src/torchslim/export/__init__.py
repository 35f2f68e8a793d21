"""ONNX export of FP32 and quantized models, checked in ONNX Runtime against PyTorch."""

from torchslim.export.cnn import StaticLayerSpec
from torchslim.export.onnx import (
    ExportConfig,
    ExportResult,
    OrtEncoder,
    OrtModel,
    export_onnx,
    ort_session,
)
from torchslim.export.qdq import QuantLinearSpec

__all__ = ["ExportConfig", "ExportResult", "OrtEncoder", "OrtModel", "QuantLinearSpec", "StaticLayerSpec", "export_onnx", "ort_session"]
