"""What a running step may use besides its config: data, the teacher, its targets, its folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from torchslim.data.datasets import ImageData, load_dataset


@dataclass
class StepContext:
    """Shared by the steps of one recipe run.

    ``teacher`` is the model the recipe started from (eval mode, never modified): fine-tuning
    steps with ``distill`` learn from it. ``targets`` is the step's ``targets`` mapping, if any.
    """

    dataset: str
    teacher: nn.Module | None = None
    quiet: bool = False
    calibration_samples: int = 512
    data_dir: str | None = None
    targets: dict[str, Any] | list[str] | None = None
    run_dir: Path | None = None
    _cache: dict[tuple[str, str], ImageData] = field(default_factory=dict)

    def data(self, split: str, dataset: str | None = None) -> ImageData:
        """A split of ``dataset`` (default: the recipe's), loaded once per run."""
        key = (dataset or self.dataset, split)
        if key not in self._cache:
            self._cache[key] = load_dataset(key[0], split, data_dir=self.data_dir)
        return self._cache[key]

    def calibration(self, dataset: str | None = None) -> ImageData:
        """The first ``calibration_samples`` training images (fixed, so runs are reproducible)."""
        return self.data("train", dataset).subset(self.calibration_samples)
