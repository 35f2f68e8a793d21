"""Sentence embeddings from a Hugging Face encoder and how far a compressed one drifts.

Embeddings are the attention-mask-weighted mean of the last hidden state, exactly as
sentence-transformers pools all-MiniLM-L6-v2 (its ``1_Pooling`` config: mean tokens), then
L2-normalised. :func:`embedding_report` compares a candidate to the FP32 reference with
:func:`torchslim.measure.embedding_fidelity` and times it at batch 1 and at batch 32 x 64 tokens.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import CheckpointError, DataError, require
from torchslim.measure import embedding_fidelity, measure_latency
from torchslim.measure.metrics import pooled_embedding

# An encoder is anything called as fn(input_ids=..., attention_mask=...) returning the last
# hidden state (a tensor) or a transformers output with ``last_hidden_state``.
Encoder = Callable[..., Any]


def load_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved in a Hugging Face model folder, offline.

    Raises :class:`CheckpointError` when the folder has no tokenizer files.
    """
    require("transformers", "hf")
    folder = Path(folder)
    names = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")
    if not folder.is_dir() or not any((folder / n).is_file() for n in names):
        raise CheckpointError(
            f"{folder} has no tokenizer (none of {', '.join(names)}); save the tokenizer beside the model "
            "with tokenizer.save_pretrained(folder)"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer in {folder}: {str(exc).splitlines()[0]}") from exc


@dataclass
class Batch:
    """Token ids and attention mask, plus how many texts were cut to the model's limit."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truncated: int = 0

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def __call__(self, model: Any) -> Any:
        return model(**self.as_kwargs())

    @property
    def batch_size(self) -> int:
        return len(self.input_ids)


def model_max_length(tokenizer: Any, model: nn.Module | None = None) -> int:
    """The longest input the pair accepts: the smaller of the tokenizer's and the positions'."""
    limits = []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    cfg = getattr(model, "config", None)
    pos = getattr(cfg, "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        limits.append(pos)
    return min(limits) if limits else 512


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    model: nn.Module | None = None,
    pad_to: int | None = None,
    warn: bool = True,
) -> Batch:
    """Tokenize ``texts``; text longer than the limit is truncated and the count reported.

    ``pad_to`` pads (and truncates) every row to exactly that many tokens.
    """
    if isinstance(texts, str) or not texts:
        raise DataError("tokenize needs a non-empty list of strings")
    limit = model_max_length(tokenizer, model)
    if max_length is not None:
        if max_length < 2:
            raise DataError(f"max_length must be >= 2 tokens, got {max_length}")
        limit = min(limit, max_length)
    if pad_to is not None:
        limit = min(limit, pad_to)
    full = tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
    truncated = sum(len(ids) > limit for ids in full)
    if truncated and warn:
        warnings.warn(
            f"{truncated} of {len(texts)} texts are longer than the model's limit of {limit} tokens and were truncated",
            stacklevel=2,
        )
    enc = tokenizer(
        list(texts), truncation=True, max_length=limit, return_tensors="pt",
        padding="max_length" if pad_to is not None else True,
    )  # fmt: skip
    return Batch(enc["input_ids"], enc["attention_mask"], truncated)


def calibration_batches(tokenizer: Any, sentences: Sequence[str], *, batch_size: int = 64, max_length: int = 128,
                        model: nn.Module | None = None) -> list[Batch]:  # fmt: skip
    """Tokenized batches of ``sentences`` for calibration (texts over the limit are truncated and
    reported); each follows :class:`torchslim.quantization.calibrate.CalibrationBatch`."""
    if len(sentences) == 0:
        raise DataError("calibration needs at least one sentence")
    return [
        tokenize(tokenizer, list(sentences[i : i + batch_size]), max_length=max_length, model=model)
        for i in range(0, len(sentences), batch_size)
    ]


def _hidden(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, (tuple, list)):
        return out[0]
    raise DataError(f"the encoder returned {type(out).__name__}; expected a tensor or an output with last_hidden_state")


@torch.inference_mode()
def encode(
    model: Encoder,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int | None = 128,
    normalize: bool = True,
    pad_to: int | None = None,
) -> torch.Tensor:
    """Sentence embeddings ``[len(sentences), hidden]`` (mean-pooled, L2-normalised).

    ``pad_to`` pads every batch to that many tokens (one input shape, for compiled models).

    >>> from torchslim.transformers.testing import tiny_bert, tiny_tokenizer
    >>> encode(tiny_bert(), tiny_tokenizer(), ["a b", "c"]).shape
    torch.Size([2, 32])
    """
    if isinstance(model, nn.Module):
        model.eval()
    out = []
    for i in range(0, len(sentences), batch_size):
        b = tokenize(tokenizer, sentences[i : i + batch_size], max_length=max_length, pad_to=pad_to,
                     model=model if isinstance(model, nn.Module) else None)  # fmt: skip
        h = _hidden(model(**b.as_kwargs()))
        e = pooled_embedding(h.float(), b.attention_mask)
        out.append(torch.nn.functional.normalize(e, dim=-1) if normalize else e)
    return torch.cat(out)


def latency_inputs(tokenizer: Any, batch: int, tokens: int = 64) -> dict[str, torch.Tensor]:
    """A ``batch x tokens`` input of real text with no padding (every position attended)."""
    from torchslim.transformers.corpus import long_texts

    b = tokenize(tokenizer, long_texts(batch, tokenizer, tokens), pad_to=tokens, warn=False)
    if not bool(b.attention_mask.all()):
        raise DataError("latency input came out padded; the joined sentences were too short")
    return b.as_kwargs()


def embedding_report(
    reference: torch.Tensor,
    candidate_model: Encoder,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    tokens: int = 64,
    runs: int = 20,
    threads: int = 2,
) -> dict[str, float]:
    """Fidelity to ``reference`` embeddings plus ``latency_ms_b{n}`` at each batch size.

    Batch 1 and batch ``n`` inputs are ``tokens`` long real text, no padding.
    """
    cand = encode(candidate_model, tokenizer, sentences)
    if cand.shape != reference.shape:
        raise DataError(f"reference embeddings {tuple(reference.shape)} do not pair with {tuple(cand.shape)}")
    out: dict[str, float] = dict(embedding_fidelity(reference, cand))
    for bs in batch_sizes:
        x = latency_inputs(tokenizer, bs, tokens)
        out[f"latency_ms_b{bs}"] = measure_latency(candidate_model, x, runs=runs, warmup=max(2, runs // 5), threads=threads).median_ms
    return out
