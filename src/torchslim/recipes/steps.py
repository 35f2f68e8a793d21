"""Built-in recipe steps: adapters from each verb's methods to ``run(model, config, ctx)``.

Deep Compression's methods, fine-tuning and evaluation are always here; every method that
``torchslim.quantization``, ``torchslim.pruning`` and ``torchslim.export`` export is wired when
those packages import (their config classes are the step configs).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from torchslim.layer_report import Report
from torchslim.recipes.context import StepContext
from torchslim.recipes.registry import CODED, QUANTIZED, SHARED, SPARSE, register_step

_registered = False

NO_TRAIN_AFTER_QUANT = "the model was converted to integer kernels, which cannot be trained"
FINAL_CODED = "Huffman-coded layers are the final storage form; nothing can change them afterwards"
NOT_ON_SHARED = "weight-shared layers hold codebook indices, not float weights"
NOT_ON_QUANT = "the model's weights are already integers"


# ----------------------------------------------------------------------------- Deep Compression
def _own(config: Any) -> Any:
    """The step's own ``dataset`` when the recipe set one, else None: the run's data."""
    return config.dataset if "dataset" in config.model_fields_set else None


def _run_deep_compression(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    from torchslim.compression import deep_compress

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
    from torchslim.compression import share_weights

    return share_weights(model, config)


def _run_huffman(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    from torchslim.compression import bits_table, huffman_code

    out, report = huffman_code(model, config)
    report.summary["bits_table"] = bits_table(out)
    return out, report


# ----------------------------------------------------------------------------- fine-tuning
def _finetune_config_cls() -> type[BaseModel]:
    try:
        from torchslim.recovery import FinetuneConfig

        return FinetuneConfig
    except ImportError:  # the recovery package is optional at this layer; fall back to the loop's config
        from torchslim.training.config import TrainConfig

        class FinetuneConfig(TrainConfig):  # type: ignore[no-redef]
            """Fine-tune with the one training loop on ``dataset``."""

            dataset: str | None = None

        return FinetuneConfig


def _run_finetune(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
    teacher = ctx.teacher if getattr(config, "distill", None) is not None else None
    train, val = ctx.data("train", _own(config)), ctx.data("val", _own(config))
    try:
        from torchslim.recovery import finetune
    except ImportError:
        import copy

        from torchslim.training import fit

        out = copy.deepcopy(model)
        res = fit(out, config, train, val, teacher=teacher, quiet=ctx.quiet)
        rep = Report("finetune", "finetune")
        rep.summary = {"best_val_accuracy": res.best_val_accuracy, "epochs_run": res.epochs_run}
        return out, rep
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
    from torchslim.measure.metrics import compute_metric
    from torchslim.modes import kept_mode

    rep = Report("evaluate", f"{config.dataset or ctx.dataset}/{config.split}")
    with kept_mode(model):
        model.eval()
        res = compute_metric(model, ctx.data(config.split, config.dataset), ctx.metric)
    rep.summary = {res["metric"]: res["value"]}
    return model, rep


# ----------------------------------------------------------------------------- registration
def register_builtin() -> None:
    """Register every built-in step once (and any optional verb package that imports)."""
    global _registered
    if _registered:
        return
    _registered = True
    from torchslim.compression.config import (
        DeepCompressionConfig,
        HuffmanCodingConfig,
        WeightSharingConfig,
    )

    register_step(
        "deep_compression", DeepCompressionConfig, _run_deep_compression, produces={SPARSE, CODED},
        forbidden_after={QUANTIZED: NOT_ON_QUANT, SHARED: NOT_ON_SHARED, CODED: FINAL_CODED},
        description="Deep Compression: prune + trained k-means weight sharing + Huffman coding",
    )  # fmt: skip
    register_step(
        "weight_sharing", WeightSharingConfig, _run_weight_sharing, produces={SHARED},
        forbidden_after={QUANTIZED: NOT_ON_QUANT, SHARED: "the layers are already weight-shared", CODED: FINAL_CODED},
        description="k-means weight sharing per layer (fine-tune afterwards to train the centroids)",
    )  # fmt: skip
    register_step(
        "huffman_coding", HuffmanCodingConfig, _run_huffman, produces={CODED},
        forbidden_after={CODED: FINAL_CODED}, requires={SHARED: "a weight_sharing step"},
        description="Huffman-code codebook indices and relative sparse positions",
    )  # fmt: skip
    register_step(
        "finetune", _finetune_config_cls(), _run_finetune,
        forbidden_after={QUANTIZED: NO_TRAIN_AFTER_QUANT, CODED: FINAL_CODED},
        description="fine-tune with the one training loop (distill from the input model with distill:)",
    )  # fmt: skip
    register_step("evaluate", EvaluateConfig, _run_evaluate, description=EvaluateConfig.__doc__ or "")
    from torchslim.recipes import optional_steps

    optional_steps.register_optional()
