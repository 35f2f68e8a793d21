"""Compression for Hugging Face encoders: all-MiniLM-L6-v2 and any BERT-like model on disk.

* data and evaluation: :func:`load_sentences` (real sentences, offline), :func:`encode`
  (mean-pooled embeddings), :func:`embedding_report` (fidelity to FP32 + latency);
* quantization: :func:`quantize_encoder_int8` (SmoothQuant + per-token INT8),
  :func:`quantize_encoder_gptq` (weight-only INT4/INT8 with GPTQ);
* pruning: :func:`wanda_prune` (unstructured / 2:4), :func:`prune_heads_and_neurons`;
* loading: :func:`load_encoder` (model + tokenizer, every weight accounted for).

Quantized models save with :func:`torchslim.checkpoint.save_checkpoint` and export with
:func:`torchslim.export.export_onnx`.
"""

from torchslim.transformers.calibrate import calibration_batches
from torchslim.transformers.corpus import load_sentences
from torchslim.transformers.embed import embedding_report, encode, load_tokenizer, tokenize
from torchslim.transformers.gptq import GPTQConfig, quantize_encoder_gptq
from torchslim.transformers.int8 import EncoderInt8Config, quantize_encoder_int8
from torchslim.transformers.loading import load_encoder
from torchslim.transformers.modules import SmoothedLinear
from torchslim.transformers.prune import (
    StructuredConfig,
    WandaConfig,
    prune_heads_and_neurons,
    wanda_prune,
)

__all__ = [
    "EncoderInt8Config", "GPTQConfig", "SmoothedLinear", "StructuredConfig", "WandaConfig", "calibration_batches",
    "embedding_report", "encode", "load_encoder", "load_sentences", "load_tokenizer", "prune_heads_and_neurons",
    "quantize_encoder_gptq", "quantize_encoder_int8", "tokenize", "wanda_prune",
]  # fmt: skip
