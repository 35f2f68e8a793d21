"""``evaluate``: the metric, parameters, sparsity, size, MACs and latency of any model, in one dict."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchslim.data.protocol import as_data
from torchslim.errors import ConfigError
from torchslim.measure.latency import check_runs, measure_latency, peak_rss_mb
from torchslim.measure.macs import count_macs
from torchslim.measure.metrics import check_metric, compute_metric
from torchslim.measure.size import count_params, file_size, sparsity
from torchslim.modes import kept_mode
from torchslim.surgery import check_finite


def evaluate(
    model: nn.Module,
    data: Any = None,
    *,
    metric: Any = "accuracy",
    reference: nn.Module | None = None,
    input_fn: Callable[[Any], Any] | None = None,
    target_fn: Callable[[Any], Any] | None = None,
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    architecture: str | None = None,
    batch_sizes: tuple[int, ...] | None = None,
    latency_runs: int = 50,
    threads: int | None = None,
    runtime: Callable[..., Any] | None = None,
    runtime_name: str = "eager",
    max_batches: int | None = None,
) -> dict[str, Any]:
    """The metric on ``data``, parameters, non-zeros, sparsity, file size, MACs, latency, memory.

    * ``data``: any DataLoader or iterable of batches (see :mod:`torchslim.data.protocol`), read
      with ``input_fn`` / ``target_fn``; or ``dataset=`` a built-in name and ``split``.
    * ``metric``: ``"accuracy"`` (top-1, percent), ``"fidelity"`` / ``"output_error"`` against
      ``reference``, a callable ``metric(output, target)``, or a torchmetrics metric.
    * Latency is timed on a batch taken from the data, at ``batch_sizes`` (default: 1 and the
      data's batch size), on ``runtime`` when given (a callable with the model's signature, named
      ``runtime_name``), else on the model itself.
    * ``size_bytes`` is the size of ``checkpoint`` when given, else of the model saved now as a
      torchslim checkpoint. The model's training mode is restored on return.

    >>> from torchslim.models import create_model
    >>> r = evaluate(create_model("lenet300"), dataset="digits", latency_runs=3, batch_sizes=(1,))
    >>> r["params"], r["macs"], r["samples"]
    (266610, 266200, 300)
    """
    check_runs(latency_runs, what="latency_runs")
    if data is None:
        if dataset is None:
            raise ConfigError("evaluate() needs data: a DataLoader / iterable of batches, or dataset=<built-in name>")
        from torchslim.data.datasets import load_dataset

        data = load_dataset(dataset, split, data_dir=data_dir)
    check_finite(model, "evaluate")
    check_metric(metric, reference)
    d = as_data(data, input_fn=input_fn, target_fn=target_fn)
    with kept_mode(model, reference):
        model.eval()
        if reference is not None:
            reference.eval()
        d.check(model, "the evaluation data")
        out: dict[str, Any] = {"dataset": dataset or d.name, "split": split if dataset else None}
        out.update(compute_metric(model, d, metric, reference=reference, max_batches=max_batches))
        out.update(count_params(model))
        out["sparsity"] = sparsity(model)
        if checkpoint is not None:
            out["size_bytes"] = file_size(checkpoint)
        else:
            from torchslim.checkpoint import save_checkpoint

            with tempfile.TemporaryDirectory() as tmp:
                p = save_checkpoint(model, Path(tmp) / "m.safetensors", architecture=architecture)
                out["size_bytes"] = p.stat().st_size
        first = d.inputs(d.first())
        try:
            out["macs"] = count_macs(model, first.resized(1).example())
        except Exception:  # noqa: BLE001 - an op without a FLOP formula must not stop the evaluation
            out["macs"] = None
        out["latency_runtime"] = runtime_name if runtime is not None else "eager"
        timed = runtime if runtime is not None else model
        sizes = batch_sizes if batch_sizes is not None else tuple(sorted({1, first.batch_size}))
        for b in sizes:
            if b < 1:
                raise ConfigError(f"batch sizes must be >= 1, got {b}")
            st = measure_latency(timed, first.resized(b).example(), runs=latency_runs,
                                 warmup=max(3, latency_runs // 5), threads=threads)  # fmt: skip
            out[f"latency_ms_b{b}"] = st.median_ms
            out[f"latency_p10_ms_b{b}"] = st.p10_ms
            out[f"latency_p90_ms_b{b}"] = st.p90_ms
            out[f"throughput_b{b}"] = st.throughput
    out["threads"] = threads if threads is not None else torch.get_num_threads()
    out["peak_rss_mb"] = peak_rss_mb()
    return out
