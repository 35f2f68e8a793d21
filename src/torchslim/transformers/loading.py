"""Load an encoder and its tokenizer from a local Hugging Face folder, strictly.

:func:`torchslim.models.transformers.load_hf_encoder` lets transformers load the model; a config
that declares *more* than the weights hold (an extra layer, say) would then load with randomly
initialised parts and only a log line. Here every parameter of the built model must come from
the weight file, so such a folder is a :class:`CheckpointError` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from torchslim.errors import CheckpointError
from torchslim.models.transformers import load_hf_encoder
from torchslim.transformers.embed import load_tokenizer


def _file_keys(folder: Path) -> set[str] | None:
    f = folder / "model.safetensors"
    if not f.is_file():
        return None  # a pytorch_model.bin folder: transformers checks it (weights_only)
    from safetensors import safe_open

    try:
        with safe_open(str(f), framework="pt") as sf:
            return set(sf.keys())
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{f} is not a readable safetensors file: {exc}") from exc


def check_weights_cover_model(model: nn.Module, folder: str | Path) -> None:
    """Raise :class:`CheckpointError` if a parameter of ``model`` is absent from the weight file."""
    folder = Path(folder)
    keys = _file_keys(folder)
    if keys is None:
        return
    prefix = getattr(model, "base_model_prefix", "") or ""
    norm = {k.removeprefix(prefix + ".") if prefix else k for k in keys}
    missing = [n for n, _ in model.named_parameters() if n not in norm]
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise CheckpointError(
            f"the config in {folder} does not match its weights: {', '.join(missing[:4])}{more} are not in "
            "model.safetensors (they would be random); fix config.json or use the folder the weights came from"
        )


def load_encoder(folder: str | Path, *, tokenizer: bool = True) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a Hugging Face folder, offline, with every weight accounted for.

    >>> import tempfile
    >>> from torchslim.transformers.testing import save_tiny_bert
    >>> m, tok = load_encoder(save_tiny_bert(tempfile.mkdtemp() + "/tiny"))
    >>> type(m).__name__, tok.tokenize("tools for")
    ('BertModel', ['tools', 'for'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; point at a Hugging Face model folder (config.json + model.safetensors)")
    tok = load_tokenizer(folder) if tokenizer else None  # before the model: fail fast, nothing loaded
    model = load_hf_encoder(folder)
    check_weights_cover_model(model, folder)
    return model, tok
