"""``finetune``: recover accuracy after pruning or quantization, optionally distilling."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from pydantic import Field

from torchslim.data.datasets import ImageData
from torchslim.data.protocol import as_data
from torchslim.errors import ConfigError
from torchslim.layer_report import Report
from torchslim.modes import kept_mode
from torchslim.surgery import check_finite
from torchslim.training.config import MAX_EPOCHS, TrainConfig
from torchslim.training.loop import Callback, TrainResult, fit


class FinetuneConfig(TrainConfig):
    """A fine-tuning run: the training loop's fields plus the data and sparsity policy.

    >>> FinetuneConfig(epochs=2, lr=0.01).keep_sparsity
    True
    """

    dataset: str | None = Field(None, description="data source (see torchslim.sources); none: the recipe's data, "
                                "or fashion-mnist when finetune() is called without data")
    data_dir: str | None = None
    lr: float = Field(0.01, gt=0)
    epochs: int = Field(5, ge=0, le=MAX_EPOCHS)
    keep_sparsity: bool = Field(True, description="weights that are exactly zero at the start stay zero")


class KeepSparsity(Callback):
    """Re-applies the zero pattern a model had at the start after every optimizer step.

    Works for any pruned model, whether its masks live in ``torch.nn.utils.prune``
    reparametrisations (then the forward hook already masks, and this is a no-op for those
    tensors) or were made permanent as zeros in the weights (then this is what keeps them zero,
    as Deep Compression's masked retraining does).
    """

    name = "keep_sparsity"

    def __init__(self) -> None:
        self.masks: dict[str, torch.Tensor] = {}

    def on_train_start(self, model: nn.Module, total_steps: int, steps_per_epoch: int) -> None:
        self.masks = {}
        for name, p in model.named_parameters():
            if p.dim() > 1 and not name.endswith("_orig"):
                zero = p.detach() == 0
                if bool(zero.any()):
                    self.masks[name] = ~zero

    @torch.no_grad()
    def on_step_end(self, model: nn.Module, step: int) -> None:
        if getattr(self, "_pending", None):
            # Resumed: the restored weights hold exactly the zeros the masks had.
            params = dict(model.named_parameters())
            self.masks = {n: params[n].detach() != 0 for n in self._pending if n in params}
            self._pending = []
        if not self.masks:
            return
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            params[name].mul_(mask)

    def state_dict(self) -> dict[str, Any]:
        # Masks are derivable from the checkpointed weights (the zeros), so only names are kept.
        return {"names": sorted(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state.get("names", [])


@dataclass
class FinetuneResult:
    train: TrainResult
    report: Report
    history: list[dict[str, float]] = field(default_factory=list)


def finetune(
    model: nn.Module,
    config: FinetuneConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    train_data: Any = None,
    val_data: Any = None,
    input_fn: Callable[[Any], Any] | None = None,
    target_fn: Callable[[Any], Any] | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    metric: Any = "accuracy",
    run_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> tuple[nn.Module, FinetuneResult]:
    """Fine-tune a copy of ``model``; returns ``(new_model, result)``. ``model`` and ``teacher``
    are not modified (their training modes included).

    ``train_data`` / ``val_data``: any DataLoader or iterable of batches (read with ``input_fn`` /
    ``target_fn``, see :mod:`torchslim.data.protocol`), or ``ImageData``; when both are omitted,
    the splits of the built-in ``config.dataset``. ``loss_fn(output, target)`` replaces
    cross-entropy; ``metric`` picks the best epoch on ``val_data``.

    >>> from torchslim.models import create_model
    >>> m, r = finetune(create_model("lenet300"), FinetuneConfig(dataset="digits", epochs=1, batch_size=64), quiet=True)
    >>> r.train.epochs_run
    1
    """
    config = config or FinetuneConfig()
    check_finite(model, "finetune")
    if teacher is not None:
        check_finite(teacher, "finetune (teacher)")
    if (train_data is None) != (val_data is None):
        raise ConfigError("pass both train_data and val_data (the best epoch is chosen on val_data), or neither")
    if train_data is None:
        from torchslim.sources import resolve_data

        train_data = resolve_data(config.dataset or "fashion-mnist", "train", data_dir=config.data_dir)
        val_data = resolve_data(config.dataset or "fashion-mnist", "val", data_dir=config.data_dir)
    if not isinstance(train_data, ImageData) or input_fn or target_fn:
        train_data = as_data(train_data, input_fn=input_fn, target_fn=target_fn)
        train_data.check(model, "train_data")
    if not isinstance(val_data, ImageData) or input_fn or target_fn:
        val_data = as_data(val_data, input_fn=input_fn, target_fn=target_fn)
        val_data.check(model, "val_data")
    with kept_mode(teacher):
        student = copy.deepcopy(model)
        cbs = list(callbacks)
        keeper = None
        if config.keep_sparsity:
            keeper = KeepSparsity()
            cbs.insert(0, keeper)
        from torchslim.measure.size import sparsity

        before = sparsity(student)
        result = fit(student, config, train_data, val_data, teacher=teacher, callbacks=cbs, run_dir=run_dir,
                     resume=resume, quiet=quiet, fingerprint_extra={"verb": "finetune"}, loss_fn=loss_fn, metric=metric)  # fmt: skip
    report = Report("finetune", "distill" if teacher is not None and config.distill else "finetune")
    report.summary = {
        "epochs_run": result.epochs_run, "steps": result.steps, "best_val_metric": result.best_val_accuracy,
        "best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch, "wall_s": result.wall_s,
        "world_size": result.world_size, "sparsity_before": before, "sparsity_after": sparsity(student),
        "stopped_early": result.stopped_early,
    }  # fmt: skip
    return student, FinetuneResult(result, report, result.history)
