"""A tiny random BERT and a tiny WordPiece tokenizer, for fast tests and doctests.

Like torchao's ``testing/model_architectures.py``: toy models ship with the package so tests
and examples need no download.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch.nn as nn

from torchslim.errors import require

_WORDS = (
    "the a of and to for in is library module data python perl package files tools development "
    "documentation support server client plugin interface utility utilities simple fast command line"
).split()


def tiny_bert_config(**overrides: Any) -> Any:
    """A BertConfig with hidden 32, 2 layers, 4 heads, FFN 64 and a 128-token limit."""
    require("transformers", "hf")
    from transformers import BertConfig

    kw: dict[str, Any] = dict(
        vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    kw.update(overrides)
    return BertConfig(**kw)


def tiny_bert(seed: int = 0, *, pooler: bool = False, **overrides: Any) -> nn.Module:
    """A randomly initialised tiny ``BertModel`` in eval mode (seeded, so repeatable)."""
    import torch

    from transformers import BertModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(tiny_bert_config(**overrides), add_pooling_layer=pooler)
    return model.eval()


def _vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars), *_WORDS]


def tiny_tokenizer(max_length: int = 128) -> Any:
    """A WordPiece tokenizer over letters, digits, punctuation and a few words."""
    require("transformers", "hf")
    from transformers import BertTokenizer

    vocab = {tok: i for i, tok in enumerate(_vocab())}
    return BertTokenizer(vocab=vocab, model_max_length=max_length)


def save_tiny_bert(folder: str | Path, *, seed: int = 0, tokenizer: bool = True) -> Path:
    """Write a tiny BERT (and its tokenizer) as a Hugging Face model folder."""
    folder = Path(folder)
    tiny_bert(seed, pooler=True).save_pretrained(str(folder))  # AutoModel builds the pooler
    if tokenizer:
        tiny_tokenizer().save_pretrained(str(folder))
    return folder
