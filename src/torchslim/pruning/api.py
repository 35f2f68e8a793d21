"""``prune(model, config)``: the pruning verb. A registry maps each config class to its method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from torchslim.data.datasets import ImageData
from torchslim.errors import ConfigError
from torchslim.layer_report import Report
from torchslim.pruning._common import check_not_quantized, copy_model
from torchslim.pruning.config import (
    GradualConfig,
    IterativeConfig,
    MagnitudeConfig,
    NMConfig,
    PruneConfig,
    RandomConfig,
    StructuredConfig,
    TaylorConfig,
    WandaConfig,
)
from torchslim.pruning.schedule import prune_gradual, prune_iterative
from torchslim.pruning.structured import prune_structured
from torchslim.pruning.unstructured import prune_unstructured

Handler = Callable[[nn.Module, Any, Any, Any], tuple[nn.Module, Report]]
_HANDLERS: dict[type[PruneConfig], Handler] = {
    MagnitudeConfig: prune_unstructured,
    RandomConfig: prune_unstructured,
    WandaConfig: prune_unstructured,
    TaylorConfig: prune_unstructured,
    NMConfig: prune_unstructured,
    StructuredConfig: prune_structured,  # type: ignore[dict-item]
}


def prune(
    model: nn.Module,
    config: PruneConfig | GradualConfig | IterativeConfig,
    *,
    targets: Any = None,
    calib_data: Any = None,
    train_data: ImageData | None = None,
    val_data: ImageData | None = None,
    teacher: nn.Module | None = None,
    quiet: bool = True,
) -> tuple[nn.Module, Report]:
    """Prune a copy of ``model`` with ``config``; returns ``(pruned_model, report)``.

    ``targets`` selects layers (the one targeting rule, see :mod:`torchslim.targets`): a list of
    names/patterns prunes exactly those; a mapping overrides the default per layer (a number is
    that layer's amount or ratio, ``None`` leaves it alone). Default: every Linear/Conv layer
    (structured pruning never prunes the layer producing the model output). ``calib_data``
    (ImageData, tensor or batches) feeds activation-aware criteria and traces shapes for MACs.

    Unstructured and N:M methods leave masks attached (``torch.nn.utils.prune`` style), so
    fine-tuning keeps them; :func:`make_permanent` folds them in before saving.

    :class:`GradualConfig` and :class:`IterativeConfig` prune while fine-tuning (``config.train``)
    and need ``train_data`` and ``val_data`` (``teacher`` enables distillation if configured).

    >>> from torchslim.models import create_model
    >>> m, report = prune(create_model("lenet300"), MagnitudeConfig(amount=0.9, scope="global"))
    >>> round(report.summary["targeted_sparsity_after"], 3)
    0.9
    """
    if isinstance(config, GradualConfig | IterativeConfig):
        if train_data is None or val_data is None:
            raise ConfigError(f"{type(config).__name__} prunes while fine-tuning: pass train_data= and val_data=")
        if isinstance(config, GradualConfig):
            new, report, _ = prune_gradual(model, config, train_data, val_data, targets=targets, teacher=teacher, quiet=quiet)
        else:
            new, report, _ = prune_iterative(model, config, train_data, val_data, targets=targets, teacher=teacher, quiet=quiet)
        return new, report
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(
            f"prune() takes one of {[c.__name__ for c in _HANDLERS]}, got {type(config).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_not_quantized(model)
    return handler(copy_model(model), config, targets, calib_data)
