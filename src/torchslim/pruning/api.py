"""``prune(model, config)``: the pruning verb; it dispatches on the config's type through :mod:`torchslim.methods`."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from torchslim.data.datasets import ImageData
from torchslim.errors import ConfigError
from torchslim.layer_report import Report
from torchslim.methods import CALIBRATION, TRAINING, MethodCall, method_for
from torchslim.pruning._common import check_not_quantized, copy_model
from torchslim.pruning.config import (
    GradualConfig,
    HeadPruningConfig,
    IterativeConfig,
    PruneConfig,
    StructuredConfig,
)
from torchslim.pruning.schedule import prune_gradual, prune_iterative
from torchslim.pruning.structured import prune_structured
from torchslim.pruning.unstructured import prune_unstructured
from torchslim.surgery import check_finite


# ----------------------------------------------------------------------------- method handlers
# Registered per config class in torchslim/pruning/__init__.py; ``prune`` has checked the model
# and the data the entry needs before any of them runs. Each works on a copy.
def unstructured_method(model: nn.Module, config: PruneConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    return prune_unstructured(copy_model(model), config, call.targets, call.calib_data)


def structured_method(model: nn.Module, config: StructuredConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    return prune_structured(copy_model(model), config, call.targets, call.calib_data)


def gradual_method(model: nn.Module, config: GradualConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    new, report, _ = prune_gradual(model, config, call.train_data, call.val_data, targets=call.targets,
                                   teacher=call.teacher, quiet=call.quiet)  # fmt: skip
    return new, report


def iterative_method(model: nn.Module, config: IterativeConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    new, report, _ = prune_iterative(model, config, call.train_data, call.val_data, targets=call.targets,
                                     teacher=call.teacher, quiet=call.quiet)  # fmt: skip
    return new, report


def heads_method(model: nn.Module, config: HeadPruningConfig, call: MethodCall) -> tuple[nn.Module, Report]:
    from torchslim.pruning.heads import prune_heads_and_neurons
    from torchslim.quantization.calibrate import as_calibration

    return prune_heads_and_neurons(model, as_calibration(call.calib_data, model), config)


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
    >>> from torchslim.pruning import MagnitudeConfig
    >>> m, report = prune(create_model("lenet300"), MagnitudeConfig(amount=0.9, scope="global"))
    >>> round(report.summary["targeted_sparsity_after"], 3)
    0.9
    """
    method = method_for(config, "prune")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if TRAINING in method.needs and (train_data is None or val_data is None):
        raise ConfigError(f"{type(config).__name__} prunes while fine-tuning: pass train_data= and val_data=")
    if CALIBRATION in method.needs and calib_data is None:
        raise ConfigError(
            f"{type(config).__name__} needs calibration data: pass calib_data= (ImageData, tensor or batches of representative inputs)"
        )
    check_not_quantized(model)
    check_finite(model, "prune")
    call = MethodCall(targets=targets, calib_data=calib_data, train_data=train_data, val_data=val_data,
                      teacher=teacher, quiet=quiet)  # fmt: skip
    return method.handler(model, config, call)
