"""QAT end to end: calibrate, insert fake quantizers, train with ``fit``, convert to integers."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from torchslim.data.protocol import ModelInput
from torchslim.layer_report import Report
from torchslim.quantization.config import QATConfig
from torchslim.quantization.graph import make_plan, trace
from torchslim.quantization.qat import prepare_qat
from torchslim.quantization.static import Precision, collect_stats, prepare_float, quantize_static


def run_qat(
    model: nn.Module, layers: list[str], calib: list[ModelInput], config: QATConfig, prec: Precision, train_data: Any,
    val_data: Any, report: Report, *, quiet: bool = True,
) -> nn.Module:  # fmt: skip
    from torchslim.training import fit

    fm, folded = prepare_float(model, config.fold_bn)
    plan = make_plan(trace(fm), layers)
    stats = collect_stats(fm, plan, calib, config.batch_size, config.observer in ("percentile", "mse", "kl"))
    gm, points = prepare_qat(fm, plan, stats, prec, config.observer, config.learn_scales)
    result = fit(gm, config.train, train_data, val_data, quiet=quiet)
    report.summary["qat"] = {"best_val_accuracy": result.best_val_accuracy, "epochs": result.epochs_run, "steps": result.steps}
    qps = {p: fq.qparams() for p, fq in points.items()}
    # fm's layers share their parameters with the trained graph, so fm now holds the QAT weights.
    return quantize_static(
        fm, layers, calib, prec=prec, observer=config.observer, batch_size=config.batch_size, percentile=99.99,
        auto_samples=1, report=report, fold_bn=False, qparams_override=qps,
    )  # fmt: skip
