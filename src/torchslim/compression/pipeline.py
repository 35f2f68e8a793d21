"""Deep Compression end to end: prune, share weights (and train the centroids), Huffman code.

:func:`deep_compress` returns the coded model plus one :class:`Stage` per step, each measured
on the *real file* its model saves to (a torchslim checkpoint): the pruned stage stores FP32
non-zeros plus a bitmask, the shared stage stores fixed-width codes, the coded stage Huffman
codes. Accuracies of the shared and coded stages are those of the reloaded files.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from torchslim.compression.coded import bits_table, huffman_code
from torchslim.compression.config import DeepCompressionConfig
from torchslim.compression.magnitude import magnitude_prune
from torchslim.compression.shared import round_codebooks, share_weights
from torchslim.data.datasets import ImageData, load_dataset
from torchslim.layer_report import Report
from torchslim.training.loop import fit


@dataclass
class Stage:
    name: str
    model: nn.Module
    report: Report | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeepCompressionResult:
    model: nn.Module
    stages: list[Stage]
    table: list[dict[str, Any]]  # the paper's Table 2/3 rows of the coded model


def deep_compress(
    model: nn.Module,
    config: DeepCompressionConfig | None = None,
    *,
    train_data: ImageData | None = None,
    val_data: ImageData | None = None,
    teacher: nn.Module | None = None,
    quiet: bool = False,
) -> DeepCompressionResult:
    """Run the three stages on a copy of ``model``; ``model`` itself is not modified.

    Training configs with ``distill`` learn from ``teacher`` (default: the uncompressed ``model``).

    >>> from torchslim.models import create_model
    >>> from torchslim.compression.config import DeepCompressionConfig
    >>> cfg = DeepCompressionConfig(dataset="digits", share_train=None,
    ...     prune={"default_keep": 0.2, "schedule": "one-shot", "train": {"epochs": 0}})
    >>> r = deep_compress(create_model("lenet300"), cfg, quiet=True)
    >>> [s.name for s in r.stages], r.table[-1]["kept_pct"]
    (['pruned', 'shared', 'coded'], 20.0)
    """
    config = config or DeepCompressionConfig()
    needs_data = config.share_train is not None or (config.prune is not None and (
        config.prune.train.epochs > 0 or (config.prune.schedule == "gradual" and config.prune.prune_epochs > 0)))  # fmt: skip
    if needs_data:
        train_data = load_dataset(config.dataset, "train") if train_data is None else train_data
        val_data = load_dataset(config.dataset, "val") if val_data is None else val_data
    distills = (config.prune is not None and config.prune.train.distill is not None) or (
        config.share_train is not None and config.share_train.distill is not None)  # fmt: skip
    if distills and teacher is None:
        teacher = copy.deepcopy(model).eval()
    stages: list[Stage] = []
    current = model
    if config.prune is not None:
        current, rep = magnitude_prune(current, config.prune, train_data=train_data, val_data=val_data,
                                       teacher=teacher, quiet=quiet)  # fmt: skip
        stages.append(Stage("pruned", current, rep))
    shared, rep = share_weights(current, config.share)
    if config.share_train is not None:
        fit(shared, config.share_train, train_data, val_data, teacher=teacher, quiet=quiet)  # type: ignore[arg-type]
    round_codebooks(shared)
    fixed, _ = huffman_code(shared, config.code.model_copy(update={"huffman": False}))
    stages.append(Stage("shared", fixed.eval(), rep))
    coded, crep = huffman_code(shared, config.code)
    stages.append(Stage("coded", coded.eval(), crep))
    return DeepCompressionResult(coded.eval(), stages, bits_table(coded))


def saved_bytes(model: nn.Module, architecture: str | None = None, config: dict[str, Any] | None = None) -> int:
    """Bytes of the .safetensors file ``model`` saves to (the sidecar JSON is a copy of its header)."""
    from torchslim.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as d:
        p = save_checkpoint(model, Path(d) / "m.safetensors", architecture=architecture, architecture_config=config)
        return p.stat().st_size
