"""Calibration of Linear layers for any model: batches, input statistics, block inputs.

The Linear-layer methods (SmoothQuant INT8, GPTQ, head pruning) read calibration data through
:func:`as_calibration`: any data of the one data protocol (:mod:`torchslim.data.protocol`), or
batches that already follow :class:`CalibrationBatch` (a tokenizer's batches from
:func:`torchslim.transformers.calibration_batches`). Statistics are gathered with forward hooks,
so any model works without tracing. Padded positions (``attention_mask == 0``) are dropped from
every statistic, and non-finite values -- e.g. an additive attention mask of ``-inf`` that
reaches an observer -- are ignored instead of producing an infinite range.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn

from torchslim.data.protocol import ModelInput, as_data
from torchslim.errors import CompatibilityError, DataError


@runtime_checkable
class CalibrationBatch(Protocol):
    """One calibration batch as the Linear-layer methods read it: called on the model, it runs
    the forward; ``attention_mask`` (or ``None``) says which token rows are real."""

    attention_mask: torch.Tensor | None

    @property
    def batch_size(self) -> int: ...

    def __call__(self, model: Any) -> Any: ...



class InputBatch:
    """Any model's batch (see :mod:`torchslim.data.protocol`) in the form the Linear-layer
    calibrations read: callable on the model, with a token mask when the inputs carry one."""

    def __init__(self, inp: ModelInput) -> None:
        self.inp = inp
        mask = inp.kwargs.get("attention_mask")
        self.attention_mask = mask if isinstance(mask, torch.Tensor) else None
        self.truncated = 0

    def __call__(self, model: Any) -> Any:
        return self.inp(model)

    @property
    def batch_size(self) -> int:
        return self.inp.batch_size


def as_calibration(data: Any, model: nn.Module, max_samples: int | None = None) -> list[Any]:
    """Calibration batches from :class:`CalibrationBatch` es or any data of the one data protocol.

    >>> import torch
    >>> batches = as_calibration([torch.randn(4, 3), torch.randn(2, 3)], torch.nn.Linear(3, 2))
    >>> [b.batch_size for b in batches]
    [4, 2]
    """
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, CalibrationBatch) for b in data):
        return list(data)
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, ModelInput) for b in data):
        return [InputBatch(b) for b in data]  # already read by quantize()'s calibration check
    d = as_data(data).bind(model)
    out: list[Any] = []
    n = 0
    for b in d:
        if max_samples is not None and n >= max_samples:
            break
        ib = b if isinstance(b, CalibrationBatch) else InputBatch(d.inputs(b))
        out.append(ib)
        n += ib.batch_size
    if not out:
        raise DataError("calibration needs at least one batch")
    return out


def token_mask(b: Any) -> torch.Tensor | None:
    """Which rows of a Linear's input are real tokens (``None``: all of them)."""
    mask = getattr(b, "attention_mask", None)
    return None if mask is None else mask.bool()


@torch.inference_mode()
def feed(model: nn.Module, batches: Sequence[CalibrationBatch], hooks: list[Any], rows: dict[str, torch.Tensor | None]) -> None:
    """Run every batch through ``model`` for the forward ``hooks`` already registered on it, with
    ``rows["mask"]`` set to the running batch's token mask (what the hooks pass to
    :func:`finite_rows`); the hooks are removed afterwards, also when a batch fails."""
    try:
        for b in batches:
            rows["mask"] = token_mask(b)
            b(model)
    finally:
        for h in hooks:
            h.remove()
        rows["mask"] = None


def finite_rows(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``x`` as ``[tokens, features]``: rows of real tokens only, non-finite values set to 0."""
    x2 = x.detach().reshape(-1, x.shape[-1]).float()
    if keep is not None and keep.numel() == x2.shape[0]:
        x2 = x2[keep.reshape(-1)]
    return torch.nan_to_num(x2, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class LinearStats:
    """Per-input-channel max |x| and, when asked, the Gram matrix ``X^T X`` (GPTQ's Hessian)."""

    absmax: torch.Tensor
    tokens: int = 0
    gram: torch.Tensor | None = None
    token_absmax: list[float] = field(default_factory=list)

    def update(self, x: torch.Tensor, want_gram: bool) -> None:
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0))
        self.tokens += x.shape[0]
        if want_gram:
            g = x.T @ x
            self.gram = g if self.gram is None else self.gram + g


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


@torch.inference_mode()
def collect_stats(
    model: nn.Module, batches: Sequence[CalibrationBatch], names: Sequence[str] | None = None, *, gram: bool = False
) -> dict[str, LinearStats]:
    """Run ``batches`` through ``model`` and record input statistics of the named Linear layers."""
    layers = linear_layers(model)
    names = list(layers) if names is None else list(names)
    stats: dict[str, LinearStats] = {}
    current: dict[str, torch.Tensor | None] = {"mask": None}
    hooks = []
    for n in names:
        m = layers[n]

        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], n: str = n, m: nn.Linear = m) -> None:
            x = finite_rows(inp[0], current["mask"])
            st = stats.setdefault(n, LinearStats(torch.zeros(m.in_features)))
            st.update(x, gram)

        hooks.append(m.register_forward_pre_hook(hook))
    model.eval()
    feed(model, batches, hooks, current)
    return stats


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The repeated transformer blocks (``encoder.layer`` in BERT), found generically.

    The largest ``nn.ModuleList`` whose items all contain Linear layers.
    """
    best: tuple[str, nn.ModuleList] | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0 and all(any(isinstance(c, nn.Linear) for c in b.modules()) for b in m):
            if best is None or len(m) > len(best[1]):
                best = (name, m)
    if best is None:
        raise CompatibilityError(f"{type(model).__name__} has no list of transformer blocks (nn.ModuleList of layers)")
    return best


class _Stop(Exception):
    pass


@torch.inference_mode()
def block_inputs(model: nn.Module, batches: Sequence[CalibrationBatch]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any], torch.Tensor]]:
    """For each batch: the positional args and kwargs the first block receives, and the token mask.

    The forward stops at the first block, so nothing beyond the embeddings is computed.
    """
    _, blocks = transformer_blocks(model)
    captured: dict[str, Any] = {}

    def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured["args"], captured["kwargs"] = args, kwargs
        raise _Stop

    h = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for b in batches:
            try:
                b(model)
            except _Stop:
                pass
            else:  # pragma: no cover - a model that skips its blocks
                raise CompatibilityError("the model's forward never reached its first transformer block")
            yield captured["args"], captured["kwargs"], token_mask(b)
    finally:
        h.remove()


def block_output(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]
