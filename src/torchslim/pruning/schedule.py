"""Pruning schedules that ride on the one training loop (:func:`torchslim.training.fit`).

* :class:`GradualPruning`: Zhu & Gupta's cubic schedule as a training callback.
* :func:`prune_gradual`: a fine-tuning run with that callback.
* :func:`prune_iterative`: prune, fine-tune, prune again (Han et al., 2015).
* :class:`KeepSparsity`: keeps zero weights zero during any fine-tuning.

Masks attached by torchslim (``torch.nn.utils.prune`` reparametrization) need no callback to
stay enforced: the forward pre-hook recomputes ``weight = weight_orig * weight_mask`` before every
forward, so the gradient that reaches the trainable ``weight_orig`` is zero where the mask is,
and whatever momentum or weight decay does to a pruned entry of ``weight_orig`` is multiplied by
zero before use. :class:`KeepSparsity` is for models whose masks were made permanent (plain
sparse weights), where an optimizer step would otherwise refill the zeros.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from torchslim.data.datasets import ImageData
from torchslim.data.protocol import as_data
from torchslim.errors import ConfigError
from torchslim.layer_report import Report
from torchslim.measure.size import sparsity as model_sparsity
from torchslim.pruning._common import (
    PRUNABLE,
    check_not_quantized,
    copy_model,
    effective,
    is_pruned,
    tensor_sparsity,
)
from torchslim.pruning.config import GradualConfig, IterativeConfig, MagnitudeConfig
from torchslim.pruning.unstructured import (
    Target,
    apply_mask,
    attach_mask,
    magnitude_scores,
    masks_from_scores,
    resolve,
)
from torchslim.training.loop import Callback, TrainResult, fit


def cubic_sparsity(
    step: int, *, initial: float, final: float, begin_step: int, n_prunes: int, frequency: int
) -> float:
    """Zhu & Gupta's target sparsity after ``step`` optimizer steps.

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3, with t held at the last update step
    (updates happen every ``dt`` steps from ``t0``); s_i before ``t0``, s_f after ``t0 + n*dt``.

    >>> round(cubic_sparsity(500, initial=0.0, final=0.8, begin_step=0, n_prunes=10, frequency=100), 4)
    0.7
    """
    end = begin_step + n_prunes * frequency
    if step <= begin_step:
        return initial
    if step >= end:
        return final
    t = begin_step + (step - begin_step) // frequency * frequency
    return final + (initial - final) * (1.0 - (t - begin_step) / (n_prunes * frequency)) ** 3


class GradualPruning(Callback):
    """Raise magnitude sparsity along the cubic schedule during :func:`~torchslim.training.fit`.

    At ``begin_step`` and every ``frequency`` steps after it (until ``end_step``) the masks are
    recomputed from the current weights, so weights that grew back during fine-tuning can survive
    and pruned ones stay pruned (masks only grow). ``targets`` floats give per-layer final
    sparsities (scope ``layer``). The callback state (last update, current target) and the masks
    (buffers in the model) make a killed run resumable.

    >>> import torch.nn as nn
    >>> cb = GradualPruning(GradualConfig(final_sparsity=0.5, n_prunes=2, frequency=1))
    >>> m = nn.Sequential(nn.Linear(8, 8))
    >>> cb.attach(m); cb.on_step_end(m, 2)
    >>> float((m[0].weight == 0).float().mean())
    0.5
    """

    name = "gradual_pruning"

    def __init__(self, config: GradualConfig, targets: Any = None) -> None:
        self.config = config
        self.targets = targets
        self.last_step = -1
        self.current = 0.0
        self.total_steps: int | None = None
        self.final_state: dict[str, torch.Tensor] | None = None  # weights after the last training step
        self._layers: list[tuple[str, float]] | None = None

    def _resolve(self, model: nn.Module) -> list[tuple[str, float]]:
        cfg = MagnitudeConfig(amount=self.config.final_sparsity, scope=self.config.scope, parameter=self.config.parameter)
        ts, _ = resolve(model, cfg, self.targets, self.config.final_sparsity)
        for t in ts:
            if isinstance(t.amount, int):
                raise ConfigError(f"target {t.name!r}: gradual pruning takes final sparsities as fractions, got the count {t.amount}")
            if self.config.scope == "global" and t.amount != self.config.final_sparsity:
                raise ConfigError("per-layer final sparsities need scope='layer'")
        return [(t.name, float(t.amount)) for t in ts]

    def attach(self, model: nn.Module) -> None:
        """Resolve targets and attach all-ones masks (call before the optimizer is built)."""
        check_not_quantized(model)
        self._layers = self._resolve(model)
        for name, _ in self._layers:
            m = model.get_submodule(name)
            if not is_pruned(m, self.config.parameter):
                attach_mask(m, self.config.parameter, torch.ones_like(getattr(m, self.config.parameter)))

    def sparsity_at(self, step: int, final: float | None = None) -> float:
        c = self.config
        return cubic_sparsity(
            step, initial=c.initial_sparsity, final=c.final_sparsity if final is None else final,
            begin_step=c.begin_step, n_prunes=c.n_prunes, frequency=c.frequency,
        )  # fmt: skip

    def prune_to(self, model: nn.Module, step: int) -> None:
        """Set every target layer's mask to the schedule's sparsity at ``step`` (magnitude)."""
        if self._layers is None:
            self.attach(model)
        layers = self._layers or []
        p = self.config.parameter
        ts = [Target(n, model.get_submodule(n), self.sparsity_at(step, f)) for n, f in layers]
        scores = magnitude_scores(ts, p)
        amount = self.sparsity_at(step)
        masks = masks_from_scores(ts, scores, self.config.scope, amount)
        for t, mk in zip(ts, masks, strict=True):
            mk = mk * getattr(t.module, p + "_mask")
            if mk.sum() == 0:
                raise ConfigError(f"the schedule would remove every weight of {t.name}; lower final_sparsity for it")
            apply_mask(t.module, p, mk)
        self.current = amount
        self.last_step = step

    def due(self, step: int) -> bool:
        c = self.config
        return c.begin_step <= step <= c.end_step and (step - c.begin_step) % c.frequency == 0 and step > self.last_step

    def on_train_start(self, model: nn.Module, total_steps: int, steps_per_epoch: int) -> None:
        self.total_steps = total_steps
        if self._layers is None:
            self.attach(model)
        if self.due(0):
            self.prune_to(model, 0)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        if self.due(step):
            self.prune_to(model, step)
        if step == self.total_steps:
            # fit() ends by restoring the best-validation epoch, which may predate the final
            # sparsity (sparser models score lower); keep the last weights for prune_gradual.
            self.final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "current": self.current, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state.get("last_step", -1))
        self.current = float(state.get("current", 0.0))
        self.total_steps = state.get("total_steps")


class KeepSparsity(Callback):
    """Re-zero, after every optimizer step, the weights that are zero when it is created.

    For fine-tuning a model whose pruning was made permanent (plain sparse tensors). Models
    still under torchslim's masks do not need it (see the module docstring), but it is harmless.
    The masks are captured from ``model`` at construction, before training changes anything, so
    constructing it from the same model again on resume gives the same masks.

    >>> import torch, torch.nn as nn
    >>> m = nn.Linear(4, 4)
    >>> with torch.no_grad(): _ = m.weight[:, :2].zero_()
    >>> cb = KeepSparsity(m)
    >>> with torch.no_grad(): _ = m.weight.add_(1.0)
    >>> cb.on_step_end(m, 1); int((m.weight == 0).sum())
    8
    """

    name = "keep_sparsity"

    def __init__(self, model: nn.Module, *, parameter: str = "weight", min_sparsity: float = 0.0) -> None:
        self.parameter = parameter
        self.masks: dict[str, torch.Tensor] = {}
        for name, m in model.named_modules():
            if not isinstance(m, PRUNABLE) or is_pruned(m, parameter) or not hasattr(m, parameter):
                continue
            w = getattr(m, parameter).detach()
            if tensor_sparsity(w) > min_sparsity:
                self.masks[name] = (w != 0).to(w.dtype)

    @torch.no_grad()
    def _apply(self, model: nn.Module) -> None:
        for name, mask in self.masks.items():
            getattr(model.get_submodule(name), self.parameter).mul_(mask)

    def on_train_start(self, model: nn.Module, total_steps: int, steps_per_epoch: int) -> None:
        self.total_steps = total_steps
        self._apply(model)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        self._apply(model)


def _layer_table(model: nn.Module, names: list[str], p: str) -> dict[str, dict[str, Any]]:
    out = {}
    for n in names:
        w = effective(model.get_submodule(n), p)
        out[n] = {"sparsity": round(tensor_sparsity(w), 6), "nonzero": int((w != 0).sum()), "params": w.numel()}
    return out


def prune_gradual(
    model: nn.Module,
    config: GradualConfig,
    train_data: ImageData,
    val_data: ImageData,
    *,
    targets: Any = None,
    teacher: nn.Module | None = None,
    callbacks: list[Callback] | None = None,
    run_dir: Any = None,
    resume: bool = False,
    quiet: bool = True,
) -> tuple[nn.Module, Report, TrainResult]:
    """Fine-tune a copy of ``model`` while :class:`GradualPruning` raises its sparsity.

    ``fit`` keeps the weights of the best validation epoch; if that epoch came before the schedule
    reached its final sparsity (a sparser model often scores lower), the weights of the last training
    step are kept instead, and the report says so (``best_epoch_before_final_sparsity``).
    """
    check_not_quantized(model)
    # ImageData counts samples (the loop batches it); any other data counts its own batches per epoch.
    per_epoch = len(train_data) // config.train.batch_size if isinstance(train_data, ImageData) else len(as_data(train_data))
    planned = config.train.epochs * per_epoch
    if config.end_step > planned:
        raise ConfigError(
            f"the gradual schedule ends at step {config.end_step} (begin_step + n_prunes * frequency) but "
            f"training runs {planned} steps; lower n_prunes/frequency or train longer"
        )
    model = copy_model(model)
    cb = GradualPruning(config, targets)
    cb.attach(model)
    names = [n for n, _ in cb._layers or []]
    before = _layer_table(model, names, config.parameter)
    sp_before = model_sparsity(model)
    result = fit(
        model, config.train, train_data, val_data, teacher=teacher, callbacks=[cb, *(callbacks or [])],
        run_dir=run_dir, resume=resume, quiet=quiet,
    )  # fmt: skip
    finals = dict(cb._layers or [])
    achieved = _layer_table(model, names, config.parameter)
    zeros = {n: a["params"] - a["nonzero"] for n, a in achieved.items()}
    if config.scope == "global":
        total = sum(a["params"] for a in achieved.values())
        late = sum(zeros.values()) < round(config.final_sparsity * total)
    else:
        late = any(zeros[n] < round(finals[n] * achieved[n]["params"]) for n in names)
    if late and cb.final_state is not None:
        model.load_state_dict(cb.final_state)  # the last step's weights: fully pruned and fine-tuned after
    elif late:
        cb.last_step = -1
        cb.prune_to(model, config.end_step)
    report = Report("prune", "gradual")
    after = _layer_table(model, names, config.parameter)
    for n in names:
        report.add(n, type(model.get_submodule(n)).__name__, "pruned", f"cubic to {finals[n]}", before=before[n], after=after[n])
    report.summary = {
        "method": "gradual", "schedule": config.model_dump(exclude={"train"}), "model_sparsity_before": sp_before,
        "model_sparsity_after": model_sparsity(model), "best_val_accuracy": result.best_val_accuracy,
        "best_epoch": result.best_epoch, "best_epoch_before_final_sparsity": late,
    }  # fmt: skip
    return model, report, result


def prune_iterative(
    model: nn.Module,
    config: IterativeConfig,
    train_data: ImageData,
    val_data: ImageData,
    *,
    targets: Any = None,
    teacher: nn.Module | None = None,
    quiet: bool = True,
) -> tuple[nn.Module, Report, list[TrainResult]]:
    """Prune to a rising sparsity, fine-tune, repeat ``rounds`` times (on a copy of ``model``).

    ``targets`` floats are per-layer final sparsities; round r prunes each to 1 - (1 - f)^(r/R).
    """
    from torchslim.pruning.api import prune

    results: list[TrainResult] = []
    first: Report | None = None
    rounds = []
    current = model
    for r in range(1, config.rounds + 1):
        amount = config.sparsity_at(r)
        t = targets
        if isinstance(targets, dict):
            t = {
                k: (1.0 - (1.0 - v) ** (r / config.rounds) if isinstance(v, float) and not isinstance(v, bool) else v)
                for k, v in targets.items()
            }
        current, rep = prune(current, MagnitudeConfig(amount=amount, scope=config.scope, parameter=config.parameter), targets=t)
        first = first or rep
        res = fit(current, config.train, train_data, val_data, teacher=teacher, quiet=quiet)
        results.append(res)
        rounds.append({"round": r, "sparsity": rep.summary["targeted_sparsity_after"], "best_val_accuracy": res.best_val_accuracy})
    assert first is not None
    report = Report("prune", "iterative")
    names = [e.name for e in first.layers if e.action == "pruned"]
    after = _layer_table(current, names, config.parameter)
    for e in first.layers:
        if e.action == "pruned":
            report.add(e.name, e.layer_type, "pruned", f"{config.rounds} rounds", before=e.before, after=after[e.name])
        else:
            report.layers.append(e)
    report.summary = {"method": "iterative", "rounds": rounds, "model_sparsity_after": model_sparsity(current)}
    return current, report, results
