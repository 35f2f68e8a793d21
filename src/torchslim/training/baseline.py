"""FP32 baseline training: a registered model, a data set, the one loop, a saved checkpoint.

Baselines are cached: :func:`get_baseline` reuses ``baselines/<model>-<dataset>.safetensors``
when it exists (the repo commits small ones), else trains and saves it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import torch.nn as nn

from torchslim.checkpoint import load_checkpoint, save_checkpoint
from torchslim.data.datasets import load_dataset
from torchslim.errors import CheckpointError
from torchslim.measure.accuracy import accuracy
from torchslim.training.config import TrainConfig
from torchslim.training.loop import fit

# Hyper-parameters that reach the bars on Fashion-MNIST within a CPU budget.
RECOMMENDED: dict[str, dict[str, Any]] = {
    # Random shifts make the MLP underfit (89.6% train accuracy after 40 epochs); it needs none.
    "lenet300": dict(epochs=30, lr=0.1, weight_decay=5e-4, batch_size=128, augment=False),
    "lenet5": dict(epochs=15, lr=0.05, weight_decay=5e-4, batch_size=128),
    # 8 epochs: what a 2-core CPU trains in ~40 minutes (about 0.6 s per step of 128).
    "resnet20": dict(epochs=8, lr=0.1, weight_decay=5e-4, batch_size=128, warmup_epochs=0.5),
    "resnet8": dict(epochs=10, lr=0.1, weight_decay=5e-4, batch_size=128),
}

BASELINE_DIR = Path(__file__).resolve().parents[3] / "baselines"


def default_config(model_name: str, **overrides: Any) -> TrainConfig:
    return TrainConfig(**{**RECOMMENDED.get(model_name, {}), **overrides})


def train_baseline(
    model_name: str,
    out: str | Path,
    *,
    dataset: str = "fashion-mnist",
    config: TrainConfig | None = None,
    data_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model_name`` on ``dataset`` and save it (safetensors + JSON with metrics)."""
    from torchslim.models import create_model

    config = config or default_config(model_name)
    train = load_dataset(dataset, "train", data_dir=data_dir)
    val = load_dataset(dataset, "val", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    import torch

    torch.manual_seed(config.seed)  # the initial weights are part of what the seed fixes
    model = create_model(model_name, num_classes=train.num_classes)
    result = fit(model, config, train, val, run_dir=run_dir, resume=resume, quiet=quiet)
    metrics = {
        "test_accuracy": accuracy(model, test),
        "val_accuracy": result.best_val_accuracy,
        "best_epoch": result.best_epoch,
        "world_size": result.world_size,
    }
    # Timings go to the .json sidecar only: the same seed and command give the same checkpoint bytes.
    run = {"train_wall_s": round(result.wall_s, 1)}
    meta = {
        "kind": "baseline",
        "dataset": dataset,
        "train_config": config.model_dump(),
        "metrics": metrics,
        "command": " ".join(shlex.quote(a) for a in sys.argv),
    }
    from torchslim.training.loop import _dist_env

    if _dist_env()[0] == 0:
        save_checkpoint(model, out, architecture=model_name, architecture_config={"num_classes": train.num_classes},
                        meta=meta, sidecar_meta={"history": result.history, "run": run})  # fmt: skip
    return model, {**meta, "history": result.history, "run": run}


def baseline_path(model_name: str, dataset: str = "fashion-mnist", root: str | Path | None = None) -> Path:
    return Path(root or BASELINE_DIR) / f"{model_name}-{dataset}.safetensors"


def get_baseline(
    model_name: str, dataset: str = "fashion-mnist", *, root: str | Path | None = None, train_if_missing: bool = True,
    quiet: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """The cached FP32 baseline, trained now if missing (or unreadable) and ``train_if_missing``."""
    path = baseline_path(model_name, dataset, root)
    if path.is_file():
        try:
            return load_checkpoint(path)
        except CheckpointError:
            if not train_if_missing:
                raise
    elif not train_if_missing:
        raise CheckpointError(f"no cached baseline at {path}; run `torchslim train --model {model_name}`")
    return train_baseline(model_name, path, dataset=dataset, quiet=quiet)
