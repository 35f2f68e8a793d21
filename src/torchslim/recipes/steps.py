"""Recipe steps: the adapter from a registered method to ``run(model, config, ctx)``, and the
recipe-only steps (Deep Compression's stages, fine-tuning, evaluation, ONNX export).

Every method in :mod:`torchslim.methods` is a step of the same name (see
:func:`torchslim.recipes.registry.get_step`); its verb (``quantize`` / ``prune``) is called with
the data the run provides, so a method registered anywhere is usable in a recipe as it stands.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from torchslim.compression import bits_table, deep_compress, huffman_code, share_weights
from torchslim.compression.config import (
    DeepCompressionConfig,
    HuffmanCodingConfig,
    WeightSharingConfig,
)
from torchslim.data.protocol import first_input
from torchslim.export import ExportConfig, export_onnx
from torchslim.layer_report import Report
from torchslim.measure.metrics import compute_metric
from torchslim.methods import TRAINING, Method
from torchslim.modes import kept_mode
from torchslim.pruning import make_permanent, prune
from torchslim.quantization import quantize
from torchslim.recipes.context import StepContext
from torchslim.recipes.registry import CODED, QUANTIZED, SHARED, SPARSE, register_step
from torchslim.recovery import FinetuneConfig, finetune

NO_TRAIN_AFTER_QUANT = "the model was converted to integer kernels, which cannot be trained"
FINAL_CODED = "Huffman-coded layers are the final storage form; nothing can change them afterwards"
NOT_ON_SHARED = "weight-shared layers hold codebook indices, not float weights"
NOT_ON_QUANT = "the model's weights are already integers"


# ----------------------------------------------------------------------------- registered methods
def _run_quantize(model: nn.Module, config: Any, ctx: StepContext, data: dict[str, Any]) -> tuple[nn.Module, Report]:
    return quantize(model, config, targets=ctx.targets, quiet=ctx.quiet, **data)


def _run_prune(model: nn.Module, config: Any, ctx: StepContext, data: dict[str, Any]) -> tuple[nn.Module, Report]:
    new, report = prune(model, config, targets=ctx.targets, teacher=ctx.teacher, quiet=ctx.quiet, **data)
    # Fold masks into the weights: the model saves with its architecture's keys (sparse tensors
    # as bitmask + values) and later fine-tuning steps keep the zeros.
    return make_permanent(new, inplace=True), report


# How a recipe calls each verb; a method of a new verb needs its adapter here.
VERBS: dict[str, Callable[[nn.Module, Any, StepContext, dict[str, Any]], tuple[nn.Module, Report]]] = {
    "quantize": _run_quantize, "prune": _run_prune,
}  # fmt: skip


def run_method(method: Method, model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    """Run registry entry ``method`` as a recipe step through its verb. Calibration samples always
    go along (the report measures the output error; pruning traces shapes); the train/val splits
    only to methods that train."""
    data: dict[str, Any] = {"calib_data": ctx.calibration()}
    if TRAINING in method.needs:
        data.update(train_data=ctx.data("train"), val_data=ctx.data("val"))
    return VERBS[method.verb](model, config, ctx, data)


# ----------------------------------------------------------------------------- Deep Compression
def _own(config: Any) -> Any:
    """The step's own ``dataset`` when the recipe set one, else None: the run's data."""
    return config.dataset if "dataset" in config.model_fields_set else None


def _run_deep_compression(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    result = deep_compress(
        model, config, train_data=ctx.data("train", _own(config)), val_data=ctx.data("val", _own(config)),
        teacher=ctx.teacher, quiet=ctx.quiet,
    )  # fmt: skip
    report = Report("compress", "deep_compression")
    for stage in result.stages:
        if stage.report is not None:
            for e in stage.report.layers:
                report.add(e.name, e.layer_type, f"{stage.name}: {e.action}", e.detail, before=e.before, after=e.after)
    report.summary = {"bits_table": result.table}
    return result.model, report


def _run_weight_sharing(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    return share_weights(model, config)


def _run_huffman(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    out, report = huffman_code(model, config)
    report.summary["bits_table"] = bits_table(out)
    return out, report


# ----------------------------------------------------------------------------- fine-tuning
def _run_finetune(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    teacher = ctx.teacher if getattr(config, "distill", None) is not None else None
    train, val = ctx.data("train", _own(config)), ctx.data("val", _own(config))
    out, result = finetune(model, config, teacher=teacher, train_data=train, val_data=val, quiet=ctx.quiet, metric=ctx.metric)
    return out, result.report


# ----------------------------------------------------------------------------- evaluation
class EvaluateConfig(BaseModel):
    """Measure the model as it stands (the run's metric on ``split``); changes nothing.
    ``dataset``: another data source than the recipe's (see :mod:`torchslim.sources`)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str | None = None
    split: str = Field("test", pattern="^(train|val|test)$")


def _run_evaluate(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    rep = Report("evaluate", f"{config.dataset or ctx.dataset}/{config.split}")
    with kept_mode(model):
        model.eval()
        res = compute_metric(model, ctx.data(config.split, config.dataset), ctx.metric, reference=ctx.teacher)
    rep.summary = {res["metric"]: res["value"]}
    return model, rep


# ----------------------------------------------------------------------------- export
def _run_export(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    with tempfile.TemporaryDirectory() as d:
        # Into the run's output folder when there is one (the file is part of the result).
        path = (ctx.run_dir or Path(d)) / "model.onnx"
        res = export_onnx(model, path, example=first_input(ctx.data("test")).resized(1).example(), config=config,
                          force=True)  # fmt: skip
        rep = Report("export", "onnx")
        rep.summary = {"file": path.name if ctx.run_dir else None, "size_bytes": res.size_bytes,
                       "max_abs_diff": res.max_abs_diff, "ops": res.ops}  # fmt: skip
    return model, rep


# ----------------------------------------------------------------------------- registration
def register_builtin(register: Callable[..., Any] = register_step) -> None:
    """Register the recipe-only steps with ``register`` (the methods' steps come from
    :mod:`torchslim.methods`); :mod:`torchslim.recipes.registry` calls it once, with its own."""
    register(
        "deep_compression", DeepCompressionConfig, _run_deep_compression, produces={SPARSE, CODED},
        forbidden_after={QUANTIZED: NOT_ON_QUANT, SHARED: NOT_ON_SHARED, CODED: FINAL_CODED},
        description="Deep Compression: prune + trained k-means weight sharing + Huffman coding",
    )  # fmt: skip
    register(
        "weight_sharing", WeightSharingConfig, _run_weight_sharing, produces={SHARED},
        forbidden_after={QUANTIZED: NOT_ON_QUANT, SHARED: "the layers are already weight-shared", CODED: FINAL_CODED},
        description="k-means weight sharing per layer (fine-tune afterwards to train the centroids)",
    )  # fmt: skip
    register(
        "huffman_coding", HuffmanCodingConfig, _run_huffman, produces={CODED},
        forbidden_after={CODED: FINAL_CODED}, requires={SHARED: "a weight_sharing step"},
        description="Huffman-code codebook indices and relative sparse positions",
    )  # fmt: skip
    register(
        "finetune", FinetuneConfig, _run_finetune,
        forbidden_after={QUANTIZED: NO_TRAIN_AFTER_QUANT, CODED: FINAL_CODED},
        description="fine-tune with the one training loop (distill from the input model with distill:)",
    )  # fmt: skip
    register("evaluate", EvaluateConfig, _run_evaluate, description=EvaluateConfig.__doc__ or "")
    register("export", ExportConfig, _run_export, description="export to ONNX and check it in ONNX Runtime")
