"""What a running step may use besides its config: data, the teacher, its targets, its folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from torchslim.data.datasets import ImageData
from torchslim.data.protocol import as_data


@dataclass
class StepContext:
    """Shared by the steps of one recipe run.

    ``dataset`` is any data source :func:`torchslim.sources.resolve_data` takes (a built-in name,
    an image folder, a sentences file, ``pkg.module:factory``) or a DataLoader / batches object
    (then every split reads it), read with ``input_fn`` / ``target_fn``. ``teacher`` is the model
    the recipe started from (eval mode, never modified): fine-tuning steps with ``distill`` learn
    from it. ``targets`` is the step's ``targets`` mapping, if any.
    """

    dataset: Any
    teacher: nn.Module | None = None
    quiet: bool = False
    calibration_samples: int = 512
    data_dir: str | None = None
    targets: dict[str, Any] | list[str] | None = None
    run_dir: Path | None = None
    input_fn: Callable[[Any], Any] | None = None
    target_fn: Callable[[Any], Any] | None = None
    tokenizer: Any = None
    metric: Any = "accuracy"
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def data(self, split: str, dataset: Any = None) -> Any:
        """A split of ``dataset`` (default: the recipe's), loaded once per run: an ``ImageData`` or a
        :class:`~torchslim.data.protocol.Data`."""
        source = dataset if dataset is not None else self.dataset
        key = (str(source) if isinstance(source, (str, Path)) else f"obj{id(source)}", split)
        if key not in self._cache:
            from torchslim.sources import resolve_data

            got = resolve_data(source, split, tokenizer=self.tokenizer, data_dir=self.data_dir)
            if not isinstance(got, ImageData) or self.input_fn or self.target_fn:
                got = as_data(got, input_fn=self.input_fn, target_fn=self.target_fn)
            self._cache[key] = got
        return self._cache[key]

    def calibration(self, dataset: Any = None) -> Any:
        """The first ``calibration_samples`` training samples (fixed, so runs are reproducible)."""
        d = self.data("train", dataset)
        if isinstance(d, ImageData):
            return d.subset(self.calibration_samples)
        return as_data(d.take(self.calibration_samples), input_fn=d.input_fn, target_fn=d.target_fn)
