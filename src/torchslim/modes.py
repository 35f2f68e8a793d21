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
