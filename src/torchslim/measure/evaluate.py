"""``evaluate``: every figure torchslim reports for a classifier, in one dict."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch.nn as nn

from torchslim.data.datasets import load_dataset
from torchslim.measure.accuracy import accuracy
from torchslim.measure.latency import measure_latency, peak_rss_mb, timed_runtime
from torchslim.measure.macs import count_macs
from torchslim.measure.size import count_params, file_size, sparsity


def evaluate(
    model: nn.Module,
    *,
    dataset: str = "fashion-mnist",
    split: str = "test",
    data_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    architecture: str | None = None,
    batch_sizes: tuple[int, ...] = (1, 64),
    latency_runs: int = 50,
    threads: int = 2,
) -> dict[str, Any]:
    """Accuracy, parameters, non-zeros, sparsity, file size, MACs, latency, peak memory.

    Latency is timed on :func:`~torchslim.measure.latency.timed_runtime`'s choice (a static INT8
    CNN as its ``compile_int8`` lowering), named in ``latency_runtime``.

    ``size_bytes`` is the size of ``checkpoint`` when given, else of ``model`` saved now as a
    torchslim checkpoint.

    >>> from torchslim.models import create_model
    >>> r = evaluate(create_model("lenet300"), dataset="digits", latency_runs=3)
    >>> r["params"], r["macs"]
    (266610, 266200)
    """
    data = load_dataset(dataset, split, data_dir=data_dir)
    model.eval()
    out: dict[str, Any] = {"dataset": dataset, "split": split, "samples": len(data)}
    out["accuracy"] = accuracy(model, data)
    out.update(count_params(model))
    out["sparsity"] = sparsity(model)
    if checkpoint is not None:
        out["size_bytes"] = file_size(checkpoint)
    else:
        from torchslim.checkpoint import save_checkpoint

        with tempfile.TemporaryDirectory() as d:
            p = save_checkpoint(model, Path(d) / "m.safetensors", architecture=architecture)
            out["size_bytes"] = p.stat().st_size
    example = data.images[:1]
    out["macs"] = count_macs(model, example)
    runtime, out["latency_runtime"] = timed_runtime(model)
    for b in batch_sizes:
        x = data.images[:b] if len(data) >= b else data.images[:1].repeat(b, 1, 1, 1)
        st = measure_latency(runtime, x, runs=latency_runs, warmup=max(3, latency_runs // 5), threads=threads)
        out[f"latency_ms_b{b}"] = st.median_ms
        out[f"latency_p10_ms_b{b}"] = st.p10_ms
        out[f"latency_p90_ms_b{b}"] = st.p90_ms
        out[f"throughput_b{b}"] = st.throughput
    out["threads"] = threads
    out["peak_rss_mb"] = peak_rss_mb()
    return out
