"""The caller's models come back as they were given: training flags of every submodule restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn


@contextlib.contextmanager
def kept_mode(*models: nn.Module | None) -> Iterator[None]:
    """Restore each module's ``training`` flag on exit (a model may mix train and eval submodules).

    >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    >>> m[1].eval()
    Dropout(p=0.5, inplace=False)
    >>> with kept_mode(m):
    ...     _ = m.eval()
    >>> m.training, m[1].training
    (True, False)
    """
    saved = [(mod, mod.training) for m in models if m is not None for mod in m.modules()]
    try:
        yield
    finally:
        for mod, flag in saved:
            mod.training = flag


@contextlib.contextmanager
def unfused_attention() -> Iterator[None]:
    """Turn off torch's fused attention fast path for the block.

    Under ``no_grad`` / inference mode, ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
    switch to fused kernels (``aten::_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``)
    that the ONNX exporter cannot capture and that ``FlopCounterMode`` counts as zero FLOPs; the
    unfused path computes the same function from ordinary ops.
    """
    import torch

    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)
