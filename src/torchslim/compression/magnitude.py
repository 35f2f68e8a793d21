"""Deep Compression stage 1: per-layer magnitude pruning with masked retraining.

Masks live in ``torch.nn.utils.prune`` reparametrisations (``weight = weight_orig * weight_mask``),
so the forward pass and the gradients are masked during every step of the one training loop.
With ``schedule="gradual"`` the kept fraction of each layer falls along Zhu & Gupta's cubic
curve ``k_t = k_f + (1 - k_f)(1 - t/T)^3`` over the first ``prune_epochs``; the masks then stay
fixed while ``train`` fine-tunes (a separate run, so restoring the best-validation weights can
never bring back an earlier, denser mask). Finally the reparametrisation is removed: the zeros
are permanent in ``weight``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from torchslim.compression.config import MagnitudePruningConfig
from torchslim.data.datasets import ImageData
from torchslim.errors import CompatibilityError, ConfigError, TargetError
from torchslim.layer_report import Report
from torchslim.targets import resolve_targets
from torchslim.training.loop import Callback, fit

PRUNABLE = (nn.Linear, nn.Conv2d)


def cubic_keep(final_keep: float, t: float) -> float:
    """Kept fraction at progress ``t`` in [0, 1] of Zhu & Gupta's cubic schedule.

    >>> cubic_keep(0.1, 0.0), round(cubic_keep(0.1, 0.5), 4), cubic_keep(0.1, 1.0)
    (1.0, 0.2125, 0.1)
    """
    t = min(max(t, 0.0), 1.0)
    return final_keep + (1.0 - final_keep) * (1.0 - t) ** 3


@torch.no_grad()
def _set_mask(m: nn.Module, keep: float) -> None:
    """Keep the ``keep`` fraction of the largest-magnitude weights that are still unmasked."""
    w = (m.weight_orig * m.weight_mask).abs().flatten()  # type: ignore[operator]
    k = max(1, round(keep * w.numel()))
    mask = torch.zeros_like(w)
    mask[torch.topk(w, k, sorted=False).indices] = 1.0
    m.weight_mask.copy_(mask.view_as(m.weight_mask))  # type: ignore[operator]


class GradualMagnitude(Callback):
    """Advances every layer's mask along the cubic schedule every ``frequency`` steps."""

    name = "gradual_magnitude"

    def __init__(self, keep: dict[str, float], frequency: int) -> None:
        self.keep, self.frequency, self.total = keep, frequency, 1

    def on_train_start(self, model: nn.Module, total_steps: int, steps_per_epoch: int) -> None:
        self.total = max(1, total_steps)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        if step % self.frequency and step != self.total:
            return
        # Reach the final sparsity at 80% of the run, then let the last stretch settle.
        t = step / max(1, int(0.8 * self.total))
        for name, k in self.keep.items():
            _set_mask(model.get_submodule(name), cubic_keep(k, t))

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = int(state.get("total", self.total))


def magnitude_prune(
    model: nn.Module,
    config: MagnitudePruningConfig,
    *,
    train_data: ImageData | None = None,
    val_data: ImageData | None = None,
    teacher: nn.Module | None = None,
    quiet: bool = False,
) -> tuple[nn.Module, Report]:
    """Prune each targeted layer to its ``keep`` fraction, retrain with masks; returns (model, report).

    The returned model is a pruned deep copy whose zeros are permanent. Without training data
    only one-shot pruning with ``train.epochs == 0`` is possible. With ``train.distill`` set the
    retraining distills from ``teacher`` (default: the unpruned ``model``).

    >>> from torchslim.models import create_model
    >>> cfg = MagnitudePruningConfig(keep={"fc1": 0.1}, schedule="one-shot", train={"epochs": 0})
    >>> m, rep = magnitude_prune(create_model("lenet300"), cfg)
    >>> round(float((m.fc1.weight != 0).float().mean()), 2)
    0.1
    """
    keep = resolve_targets(model, config.keep, default=config.default_keep, types=PRUNABLE)
    modules = dict(model.named_modules())
    for name in keep:
        m = modules[name]
        if not isinstance(m, PRUNABLE):
            raise TargetError(f"layer {name} is a {type(m).__name__}; magnitude pruning handles Linear and Conv2d")
        if not isinstance(getattr(m, "weight", None), nn.Parameter) and not hasattr(m, "weight_orig"):
            raise CompatibilityError(f"layer {name} has no float weight to prune (already quantized or coded?)")
    needs_data = (config.schedule == "gradual" and config.prune_epochs > 0) or config.train.epochs > 0
    if needs_data and (train_data is None or val_data is None):
        raise ConfigError("magnitude pruning with retraining needs train_data and val_data")
    if config.train.distill is not None and teacher is None:
        teacher = copy.deepcopy(model).eval()
    out = copy.deepcopy(model)
    before = {n: float((modules[n].weight != 0).float().mean()) for n in keep}  # type: ignore[union-attr]
    for name in keep:
        m = out.get_submodule(name)
        if hasattr(m, "weight_orig"):
            tprune.remove(m, "weight")
        tprune.identity(m, "weight")
        # Zeros the model already has stay zero.
        with torch.no_grad():
            m.weight_mask.copy_((m.weight_orig != 0).float())  # type: ignore[operator]
    if config.schedule == "gradual" and config.prune_epochs > 0:
        gcfg = config.train.model_copy(update={"epochs": config.prune_epochs, "early_stopping_patience": None})
        fit(out, gcfg, train_data, val_data, teacher=teacher, callbacks=[GradualMagnitude(keep, config.prune_frequency)],
            quiet=quiet)  # type: ignore[arg-type]  # fmt: skip
    # Whatever epoch fit restored, the final masks hold exactly the target fractions.
    for name, k in keep.items():
        _set_mask(out.get_submodule(name), k)
    history: list[dict[str, float]] = []
    if config.train.epochs > 0:
        history = fit(out, config.train, train_data, val_data, teacher=teacher, quiet=quiet).history  # type: ignore[arg-type]
    report = Report("prune", f"magnitude ({config.schedule})")
    for name in keep:
        m = out.get_submodule(name)
        tprune.remove(m, "weight")
        after = float((m.weight != 0).float().mean())
        report.add(name, type(m).__name__, "pruned", f"keep {keep[name]:.3g}",
                   before={"kept": before[name]}, after={"kept": after})  # fmt: skip
    report.summary = {"layers": len(keep), "finetune_epochs": len(history)}
    return out.eval(), report
