"""Hugging Face encoders: what stays specific to them is loading, tokenizing and the embedding metric.

* loading: :func:`load_encoder` (model + tokenizer from a local folder, every weight accounted for);
* data: :func:`load_sentences` (real sentences, offline), :func:`tokenize` and
  :func:`calibration_batches` (token batches any Linear-layer method calibrates on);
* evaluation: :func:`encode` (mean-pooled embeddings), :func:`embedding_report` (fidelity to
  FP32 + latency).

Compression methods are torchslim's general ones and work on any model with Linear layers:
``quantize(model, SmoothQuantConfig())`` (SmoothQuant + per-token INT8),
``quantize(model, GPTQConfig())`` (weight-only INT4/INT8), ``prune(model, WandaConfig())`` and
``prune(model, HeadPruningConfig())`` (attention heads and FFN neurons of BERT-like blocks), all
in :mod:`torchslim.quantization` and :mod:`torchslim.pruning`.
"""

from torchslim.transformers.corpus import load_sentences
from torchslim.transformers.embed import (
    calibration_batches,
    embedding_report,
    encode,
    load_tokenizer,
    tokenize,
)
from torchslim.transformers.loading import load_encoder

__all__ = [
    "calibration_batches", "embedding_report", "encode", "load_encoder", "load_sentences", "load_tokenizer", "tokenize",
]  # fmt: skip
