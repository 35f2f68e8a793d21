"""Compression for Hugging Face encoders: all-MiniLM-L6-v2 and any BERT-like model on disk.

* data and evaluation: :func:`load_sentences` (real sentences, offline), :func:`encode`
  (mean-pooled embeddings), :func:`embedding_report` (fidelity to FP32 + latency);
* quantization: :func:`quantize_encoder_int8` (SmoothQuant + per-token INT8),
  :func:`quantize_encoder_gptq` (weight-only INT4/INT8 with GPTQ);
* pruning: :func:`prune_heads_and_neurons` (Wanda, unstructured or 2:4, is
  :class:`torchslim.pruning.WandaConfig`, for any model);

``quantize(model, EncoderInt8Config())`` (recipe step ``int8_smoothquant``),
``quantize(model, GPTQConfig())`` (``gptq``) and ``prune(model, HeadPruningConfig())``
(``prune_heads``) reach the same methods through the one verbs; ``int8_smoothquant`` works on any
model with Linear layers.
* loading: :func:`load_encoder` (model + tokenizer, every weight accounted for).

Quantized models save with :func:`torchslim.checkpoint.save_checkpoint` and export with
:func:`torchslim.export.export_onnx`.
"""

from typing import Any

from torchslim.errors import ConfigError
from torchslim.layer_report import Report
from torchslim.methods import (
    CALIBRATION,
    ON_FLOAT_WEIGHTS,
    QUANTIZED,
    STRUCTURED,
    MethodCall,
    register_method,
)
from torchslim.transformers.calibrate import as_calibration, calibration_batches
from torchslim.transformers.corpus import load_sentences
from torchslim.transformers.embed import embedding_report, encode, load_tokenizer, tokenize
from torchslim.transformers.gptq import GPTQConfig, quantize_encoder_gptq
from torchslim.transformers.int8 import EncoderInt8Config, quantize_encoder_int8
from torchslim.transformers.loading import load_encoder
from torchslim.transformers.modules import SmoothedLinear
from torchslim.transformers.prune import (
    HeadPruningConfig,
    StructuredConfig,
    prune_heads_and_neurons,
)

__all__ = [
    "EncoderInt8Config", "GPTQConfig", "HeadPruningConfig", "SmoothedLinear", "StructuredConfig",
    "calibration_batches",
    "embedding_report", "encode", "load_encoder", "load_sentences", "load_tokenizer", "prune_heads_and_neurons",
    "quantize_encoder_gptq", "quantize_encoder_int8", "tokenize",
]  # fmt: skip


def _int8_smoothquant(model: Any, config: EncoderInt8Config, call: MethodCall) -> tuple[Any, Report]:
    return quantize_encoder_int8(model, as_calibration(call.calib_data, model, config.calibration_sentences), config,
                                 targets=call.targets)  # fmt: skip


def _gptq(model: Any, config: GPTQConfig, call: MethodCall) -> tuple[Any, Report]:
    return quantize_encoder_gptq(model, as_calibration(call.calib_data, model, config.calibration_sentences), config,
                                 targets=call.targets)  # fmt: skip


def _prune_heads(model: Any, config: HeadPruningConfig, call: MethodCall) -> tuple[Any, Report]:
    if call.targets:
        raise ConfigError("prune_heads removes the same fraction in every transformer block; it takes no targets")
    return prune_heads_and_neurons(model, as_calibration(call.calib_data, model), config)


register_method(EncoderInt8Config, verb="quantize", handler=_int8_smoothquant, produces={QUANTIZED},
                forbidden_after=ON_FLOAT_WEIGHTS, needs={CALIBRATION})  # codecs: registered by .modules on import
register_method(GPTQConfig, verb="quantize", handler=_gptq, produces={QUANTIZED}, forbidden_after=ON_FLOAT_WEIGHTS,
                needs={CALIBRATION})  # fmt: skip
register_method(HeadPruningConfig, verb="prune", handler=_prune_heads, produces={STRUCTURED},
                forbidden_after=ON_FLOAT_WEIGHTS, needs={CALIBRATION}, accepts_targets=False)  # fmt: skip
