"""The one training loop: baseline training and every fine-tuning after compression use it.

What it guarantees:

* Compression state survives every optimizer step: callbacks (pruning masks, gradual sparsity
  schedules, fake-quant observers) run after each step, and pruning masks live in the model.
* Deterministic and resumable: the learning rate is a pure function of the step, each step's
  augmentation is seeded by the step number, the epoch's shuffle by the epoch number, and the
  checkpoint holds model, optimizer, RNG and callback states. A run killed at any point and
  resumed replays the same batches.
* Checkpoints are one safetensors file each (tensors + JSON metadata in its header), written
  atomically by rank 0 only.
* Distributed under ``torchrun``: DDP (gloo on CPU, NCCL on GPU), DistributedSampler, per-rank
  batch = global batch / world size, rank-0-only logging.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch.utils.data.distributed import DistributedSampler

from torchslim.data.datasets import ImageData, augment, make_loader
from torchslim.data.protocol import ModelInput, as_data, output_tensor
from torchslim.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    TargetError,
    TrainingError,
    suggest,
)
from torchslim.io import atomic_path, clean_stale_in
from torchslim.training.config import TrainConfig


class Callback:
    """Hook into the loop. Subclasses override what they need; state round-trips for resume."""

    name = "callback"

    def on_train_start(self, model: nn.Module, total_steps: int, steps_per_epoch: int) -> None: ...

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step with the global step count (1-based)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_accuracy: float = 0.0
    best_epoch: int = -1
    epochs_run: int = 0
    steps: int = 0
    wall_s: float = 0.0
    stopped_early: bool = False
    world_size: int = 1


# ----------------------------------------------------------------------------- distributed
def _dist_env() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun prepared (no-op for a single process)."""
    rank, world = _dist_env()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return rank, world


# ----------------------------------------------------------------------------- helpers
def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at a (0-based) step: linear warm-up, then cosine / step / constant."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = int(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    if config.schedule == "step":
        return config.lr * config.gamma ** ((step // steps_per_epoch) // config.step_size)
    return config.lr


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Standard practice: no weight decay on biases and normalisation scales.
        (no_decay if p.dim() <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


@torch.inference_mode()
def evaluate_loss_acc(model: nn.Module, data: ImageData, batch_size: int = 500) -> tuple[float, float]:
    was = model.training
    model.eval()
    loss = correct = 0.0
    for i in range(0, len(data), batch_size):
        x, y = data.images[i : i + batch_size], data.labels[i : i + batch_size]
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += float((out.argmax(1) == y).sum())
    model.train(was)
    return loss / len(data), 100.0 * correct / len(data)


def _fingerprint(model: nn.Module, config: TrainConfig, extra: dict[str, Any] | None) -> str:
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    blob = json.dumps({"shapes": shapes, "config": config.model_dump(exclude={"epochs", "max_steps", "early_stopping_patience"}), "extra": extra or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _FeatureTaps:
    """Forward hooks that record the outputs of named layers (for feature distillation)."""

    def __init__(self, model: nn.Module, names: Sequence[str], who: str) -> None:
        modules = dict(model.named_modules())
        self.out: dict[str, torch.Tensor] = {}
        self.handles = []
        for n in names:
            if n not in modules:
                raise TargetError(f"distill feature layer {n!r} not found in the {who}.{suggest(n, modules)}")
            self.handles.append(modules[n].register_forward_hook(self._hook(n)))

    def _hook(self, name: str) -> Any:
        def fn(_m: nn.Module, _i: Any, o: Any) -> None:
            self.out[name] = o[0] if isinstance(o, tuple) else o

        return fn

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# ----------------------------------------------------------------------------- checkpoints
def _save_state(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, callbacks: Sequence[Callback], meta: dict[str, Any]
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for pid, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                opt_scalars.setdefault(str(pid), {})[k] = float(v) if torch.is_tensor(v) else v
    tensors["rng.torch"] = torch.get_rng_state()
    full = {
        **meta,
        "optimizer_scalars": opt_scalars,
        "optimizer_param_groups": osd["param_groups"],
        "callbacks": {cb.name: cb.state_dict() for cb in callbacks},
    }
    with atomic_path(path) as tmp:
        tmp.write_bytes(st_save(tensors, metadata={"torchslim_train_state": json.dumps(full, default=str)}))


def _load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    raw = path.read_bytes()
    try:
        tensors = st_load(raw)
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        meta = json.loads(header["__metadata__"]["torchslim_train_state"])
    except (SafetensorError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a readable torchslim training checkpoint ({exc})") from exc
    return tensors, meta


def _restore(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer,
    callbacks: Sequence[Callback],
) -> None:  # fmt: skip
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for pid, sc in meta["optimizer_scalars"].items():
        for key, v in sc.items():
            state.setdefault(int(pid), {})[key] = torch.tensor(v) if key == "step" else v
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    for cb in callbacks:
        cb.load_state_dict(meta["callbacks"].get(cb.name, {}))


def _epoch_batches(
    data: Any, config: TrainConfig, per_rank: int, epoch: int, world: int, rank: int
) -> Iterator[tuple[ModelInput, Any]]:
    """One epoch of ``(model input, target)`` pairs from either kind of training data."""
    if isinstance(data, ImageData):
        loader = make_loader(data, per_rank, shuffle=True, seed=config.seed, epoch=epoch, drop_last=True, world_size=world, rank=rank)
        for x, y in loader:
            yield ModelInput((x,)), y
        return
    sampler = getattr(data.source, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    for batch in data:
        yield data.inputs(batch), data.target(batch)


def _task_loss(out: Any, y: Any, config: TrainConfig, loss_fn: Callable[[Any, Any], torch.Tensor] | None) -> torch.Tensor:
    if loss_fn is not None:
        loss = loss_fn(out, y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ConfigError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} "
                              f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")  # fmt: skip
        return loss.reshape(())
    own = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if y is None:
        if isinstance(own, torch.Tensor):
            return own
        raise DataError("the training batches have no targets; pass loss_fn=lambda output, target: <scalar loss> "
                        "or target_fn")  # fmt: skip
    logits = output_tensor(out)
    try:
        return F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    except (RuntimeError, ValueError, IndexError) as exc:  # targets that are not class indices for these logits
        got = f"{str(y.dtype).removeprefix('torch.')}{list(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(
            f"the default loss is cross-entropy of class logits against class indices; the model returned "
            f"{list(logits.shape)} and the targets are {got} ({str(exc).splitlines()[0][:120]}); pass "
            "loss_fn=lambda output, target: <scalar loss> (and target_fn) for other tasks"
        ) from exc


def _correct(raw: Any, y: Any) -> float:
    """Correct top-1 predictions in the batch, when the output is class logits (else 0)."""
    try:
        out = output_tensor(raw)
    except DataError:
        return 0.0
    if isinstance(y, torch.Tensor) and y.dim() == 1 and out.dim() == 2 and len(out) == len(y) and not y.is_floating_point():
        return float((out.detach().argmax(1) == y).sum())
    return 0.0


# ----------------------------------------------------------------------------- the loop
def fit(
    model: nn.Module,
    config: TrainConfig,
    train_data: Any,
    val_data: Any,
    *,
    teacher: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
    run_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    fingerprint_extra: dict[str, Any] | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    metric: Any = "accuracy",
) -> TrainResult:
    """Train ``model`` in place; at the end it holds the weights of the best validation epoch.

    ``train_data`` / ``val_data``: an ``ImageData`` (shuffled here, augmented when
    ``config.augment``) or any data of :mod:`torchslim.data.protocol` (a DataLoader, a
    :class:`~torchslim.data.protocol.Data` with ``input_fn`` / ``target_fn``), iterated as given
    each epoch (a ``DistributedSampler`` is told the epoch). ``loss_fn(output, target)`` replaces
    cross-entropy; ``metric`` (see :mod:`torchslim.measure.metrics`) picks the best epoch on
    ``val_data``; ``best_val_accuracy`` holds its value.

    ``run_dir`` receives ``last.safetensors`` (resumable state) and ``best.safetensors``.
    """
    from torchslim.measure.metrics import check_metric, compute_metric, higher_is_better

    rank, world = init_distributed()
    tensors_path = isinstance(train_data, ImageData)
    if not tensors_path:
        train_data = as_data(train_data)
        if world > 1 and not isinstance(getattr(train_data.source, "sampler", None), DistributedSampler):
            raise ConfigError(
                "under torchrun, pass a DataLoader whose sampler is a torch.utils.data.DistributedSampler "
                "(each rank must read its own shard)"
            )
    if not isinstance(val_data, ImageData):
        val_data = as_data(val_data)
    if len(val_data) == 0:
        raise DataError("the validation data is empty; pass at least one batch")
    check_metric(metric, None)
    better = higher_is_better(metric)
    if tensors_path and len(train_data) == 0:
        raise DataError("the training data is empty; pass at least one batch")
    if config.batch_size % world:
        raise ConfigError(
            f"global batch_size {config.batch_size} is not divisible by the world size {world}; "
            f"use a multiple of {world} (e.g. {config.batch_size - config.batch_size % world or world})"
        )
    per_rank = config.batch_size // world
    torch.manual_seed(config.seed)
    run_dir = Path(run_dir) if run_dir is not None else None
    last_path = run_dir / "last.safetensors" if run_dir else None
    if run_dir is not None and rank == 0:
        clean_stale_in(run_dir)  # a killed run's half-written best/last.safetensors
    fp = _fingerprint(model, config, fingerprint_extra)

    core = model
    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model)
    if tensors_path:
        probe_loader = make_loader(train_data, per_rank, shuffle=True, seed=config.seed, drop_last=True, world_size=world, rank=rank)
        steps_per_epoch = len(probe_loader)
        if steps_per_epoch == 0:
            raise ConfigError(f"batch_size {config.batch_size} exceeds the {len(train_data)} training samples")
    else:
        steps_per_epoch = len(train_data)
        if steps_per_epoch == 0:
            raise DataError("the training data has no batches; pass a non-empty DataLoader")
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    if teacher is not None:
        # The teacher runs in eval mode under no_grad; its parameters' requires_grad flags are left
        # alone (the caller's model: flipping them would freeze every later copy of it).
        teacher.eval()
        with torch.no_grad():
            xs = ModelInput((train_data.images[:2],)) if tensors_path else train_data.bind(core).inputs(train_data.first())
            so, to = output_tensor(xs(core.eval())), output_tensor(xs(teacher))
        core.train()
        if so.shape != to.shape:
            raise ConfigError(
                f"teacher output shape {tuple(to.shape)} differs from the student's {tuple(so.shape)}; "
                "distill from a teacher with the same number of classes"
            )
    distill = config.distill if teacher is not None else None
    if config.distill is not None and teacher is None:
        raise ConfigError("distill is configured but no teacher was given; pass teacher= (the uncompressed model)")
    taps_s = taps_t = None
    if distill and distill.features:
        taps_s = _FeatureTaps(core, distill.features, "student")
        taps_t = _FeatureTaps(teacher, distill.features, "teacher")  # type: ignore[arg-type]

    opt = make_optimizer(core, config)
    result = TrainResult(world_size=world)
    step = 0
    start_epoch, skip = 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    if resume and last_path is not None and last_path.is_file():
        tensors, meta = _load_state(last_path)
        if meta.get("fingerprint") != fp:
            raise CheckpointError(
                f"{last_path} was written by another model or recipe (fingerprint {meta.get('fingerprint')} vs "
                f"{fp}): its shapes or training config differ; resume with the same model and config, or "
                "start a fresh run directory"
            )
        _restore(tensors, meta, core, opt, callbacks)
        step = int(meta["step"])
        start_epoch, skip = divmod(step, steps_per_epoch)
        result.history = meta["history"]
        result.best_val_accuracy = float(meta["best_val_accuracy"])
        result.best_epoch = int(meta["best_epoch"])
        bad_epochs = int(meta["bad_epochs"])
        best_path = run_dir / "best.safetensors"  # type: ignore[operator]
        if best_path.is_file():
            best_state = st_load(best_path.read_bytes())
    else:
        for cb in callbacks:
            cb.on_train_start(core, total_steps, steps_per_epoch)

    def checkpoint_meta() -> dict[str, Any]:
        return {
            "fingerprint": fp, "step": step, "history": result.history, "best_val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch, "bad_epochs": bad_epochs, "config": config.model_dump(),
        }  # fmt: skip

    def save_last() -> None:
        if last_path is not None and rank == 0:
            _save_state(last_path, core, opt, callbacks, checkpoint_meta())

    from torchslim.measure.size import sparsity
    from torchslim.training.progress import EpochProgress

    t0 = time.perf_counter()
    progress = EpochProgress(enabled=not quiet and rank == 0)
    ddp_model.train()
    stop = False
    with progress:
        for epoch in range(start_epoch, config.epochs):
            if step >= total_steps:
                break
            task = progress.start_epoch(epoch, config.epochs, steps_per_epoch, completed=skip)
            run_loss = run_correct = run_n = 0.0
            for i, (inp, y) in enumerate(_epoch_batches(train_data, config, per_rank, epoch, world, rank)):
                if i < skip:
                    continue
                if step >= total_steps:
                    break
                if tensors_path and config.augment:
                    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 7919)
                    inp = ModelInput((augment(inp.args[0], g, world_size=world, rank=rank),))
                for group in opt.param_groups:
                    group["lr"] = lr_at(config, step, steps_per_epoch)
                raw = inp(ddp_model)
                loss = _task_loss(raw, y, config, loss_fn)
                if distill is not None:
                    with torch.no_grad():
                        t_out = output_tensor(inp(teacher))
                    s_out = output_tensor(raw)
                    if distill.loss == "mse":
                        kd = F.mse_loss(s_out, t_out)
                        loss = (1 - distill.alpha) * loss + distill.alpha * kd
                    else:
                        T = distill.temperature
                        kd = F.kl_div(F.log_softmax(s_out / T, -1), F.log_softmax(t_out / T, -1), log_target=True,
                                      reduction="batchmean")  # fmt: skip
                        loss = (1 - distill.alpha) * loss + distill.alpha * T * T * kd
                    if taps_s is not None and taps_t is not None:
                        for n in distill.features:
                            fs, ft = taps_s.out[n], taps_t.out[n]
                            if fs.shape != ft.shape:
                                raise ConfigError(f"feature {n!r}: student shape {tuple(fs.shape)} != teacher {tuple(ft.shape)}")
                            loss = loss + distill.feature_weight * F.mse_loss(fs, ft)
                if not torch.isfinite(loss):
                    where = f"; the last good checkpoint is {last_path}" if last_path and last_path.exists() else ""
                    raise TrainingError(
                        f"non-finite loss ({float(loss.detach())}) at step {step} (epoch {epoch}){where}; "
                        f"lower the learning rate (now {opt.param_groups[0]['lr']:.3g}) or check the data for NaN"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                for cb in callbacks:
                    cb.on_step_end(core, step)
                n = inp.batch_size
                run_loss += float(loss.detach()) * n
                run_correct += _correct(raw, y)
                run_n += n
                progress.advance(task, loss=run_loss / run_n, acc=100 * run_correct / run_n)
                if step % config.checkpoint_every_steps == 0:
                    save_last()
            skip = 0
            epoch_done = step % steps_per_epoch == 0 or step >= total_steps
            if not epoch_done:
                break
            if isinstance(val_data, ImageData) and metric == "accuracy":
                val_loss, val_acc = evaluate_loss_acc(core, val_data)
            else:
                was = core.training
                core.eval()
                val_loss, val_acc = float("nan"), float(compute_metric(core, val_data, metric)["value"])
                core.train(was)
            ddp_model.train()
            rec = {
                "epoch": epoch, "step": step, "train_loss": run_loss / max(run_n, 1),
                "train_accuracy": 100 * run_correct / max(run_n, 1), "val_loss": val_loss, "val_accuracy": val_acc,
                "sparsity": sparsity(core), "lr": opt.param_groups[0]["lr"],
            }  # fmt: skip
            result.history.append(rec)
            progress.end_epoch(task, rec)
            improved = val_acc > result.best_val_accuracy if better else val_acc < result.best_val_accuracy
            if improved or result.best_epoch < 0:
                result.best_val_accuracy, result.best_epoch, bad_epochs = val_acc, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
                if run_dir is not None and rank == 0:
                    with atomic_path(run_dir / "best.safetensors") as tmp:
                        tmp.write_bytes(st_save({k: v.contiguous() for k, v in best_state.items()}))
            else:
                bad_epochs += 1
            save_last()
            if config.early_stopping_patience is not None and bad_epochs >= config.early_stopping_patience:
                result.stopped_early = stop = True
            if stop:
                break
    if taps_s is not None and taps_t is not None:
        taps_s.remove()
        taps_t.remove()
    if best_state is not None:
        core.load_state_dict(best_state)
    result.steps = step
    result.epochs_run = len(result.history)
    result.wall_s = time.perf_counter() - t0
    core.eval()
    return result
