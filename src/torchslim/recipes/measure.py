"""What a recipe run measures after the baseline and after every step (the report's data).

Sizes are real files: each stage's model is saved as a torchslim checkpoint and the
``.safetensors`` file is weighed (its JSON sidecar only repeats the file's own header).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from torchslim.data.protocol import ModelInput, first_input
from torchslim.measure import count_macs, count_params, measure_latency, speed_check
from torchslim.modes import kept_mode

HIST_BINS = 60


def layer_weight(m: nn.Module) -> torch.Tensor | None:
    """The dense float weight a layer computes with, whatever its storage, or None."""
    deq = getattr(m, "dequantized_weight", None)  # torchslim's quantized layers
    if callable(deq):
        try:
            return deq().detach().float().cpu()
        except Exception:  # noqa: BLE001 - a foreign layer with that name: fall through
            pass
    w: Any = getattr(m, "weight", None)
    if callable(w) and not isinstance(w, torch.Tensor):
        try:
            w = w()
        except Exception:  # noqa: BLE001 - foreign module types: no weight to show, not an error
            return None
    if not isinstance(w, torch.Tensor):
        return None
    try:
        if getattr(w, "is_quantized", False) or hasattr(w, "dequantize") and type(w) is not torch.Tensor and not isinstance(w, nn.Parameter):
            w = w.dequantize()
        w = w.detach()
        if w.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            return None
        return w.float().cpu()
    except Exception:  # noqa: BLE001
        return None


def layer_bits(m: nn.Module) -> float | None:
    """Bits per stored weight of a layer: its declared width, else its weight storage dtype."""
    stats = getattr(m, "bits_stats", None)
    if stats is not None:
        return float(stats.bits)
    for attr in ("bits", "weight_bits", "nbits", "n_bits"):
        v = getattr(m, attr, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return float(v)
    w: Any = getattr(m, "weight", None)
    if isinstance(w, torch.Tensor) and type(w) in (torch.Tensor, nn.Parameter):
        return float(w.element_size() * 8)
    own = [t for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)) if t.numel() > 1]
    if not own:
        return None
    big = max(own, key=lambda t: t.numel())
    return float(big.element_size() * 8)


def _is_layer(name: str, m: nn.Module) -> bool:
    if not name or any(True for _ in m.children()):
        return False
    return layer_weight(m) is not None and layer_weight(m).dim() > 1  # type: ignore[union-attr]


def layer_table(model: nn.Module) -> list[dict[str, Any]]:
    """Per weight layer: type, elements, sparsity and bits per stored weight."""
    rows = []
    for name, m in model.named_modules():
        if not _is_layer(name, m):
            continue
        w = layer_weight(m)
        assert w is not None
        rows.append({
            "name": name, "type": type(m).__name__, "numel": w.numel(),
            "sparsity": float((w == 0).float().mean()), "bits": layer_bits(m),
        })  # fmt: skip
    return rows


@torch.inference_mode()
def layer_macs(model: nn.Module, example: Any) -> int | None:
    """Dense-equivalent MACs summed over weight layers, from their output shapes.

    For integer kernels FlopCounterMode has no formula (it counts 0); each weight layer does
    ``outputs x (weight elements / output channels)`` multiply-accumulates.
    """
    total = 0
    handles = []

    def hook(m: nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        w = layer_weight(m)
        o = out[0] if isinstance(out, tuple) else out
        shape = getattr(o, "shape", None)  # quantized activations may be tensor-like objects
        if w is not None and shape is not None and len(shape) > 0 and w.dim() > 1:
            per_sample = 1
            for d in shape[1:]:
                per_sample *= int(d)
            total += per_sample * (w.numel() // w.shape[0])

    for name, m in model.named_modules():
        if _is_layer(name, m):
            handles.append(m.register_forward_hook(hook))
    try:
        ModelInput.of(example)(model.eval())
    finally:
        for h in handles:
            h.remove()
    return total or None


def weights_by_layer(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: layer_weight(m) for n, m in model.named_modules() if _is_layer(n, m)}  # type: ignore[misc]


def histograms(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Per layer: shared bin edges and the counts of the weights before and after (zeros excluded after)."""
    out = {}
    for name, wb in before.items():
        wa = after.get(name)
        b = wb.flatten().numpy()
        a = wa.flatten().numpy() if wa is not None else np.zeros(0)
        a_nz = a[a != 0]
        lo = float(min(b.min(), a_nz.min() if a_nz.size else b.min()))
        hi = float(max(b.max(), a_nz.max() if a_nz.size else b.max()))
        if hi <= lo:
            hi = lo + 1e-6
        edges = np.linspace(lo, hi, HIST_BINS + 1)
        out[name] = {
            "edges": edges.tolist(), "before": np.histogram(b, edges)[0].tolist(),
            "after": np.histogram(a_nz, edges)[0].tolist(), "after_zeros": int((a == 0).sum()),
            "after_unique": int(np.unique(a_nz).size),
        }  # fmt: skip
    return out


def saved_file_size(model: nn.Module, architecture: str | None, architecture_config: dict[str, Any] | None) -> int:
    from torchslim.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as d:
        p = save_checkpoint(model, Path(d) / "m.safetensors", architecture=architecture,
                            architecture_config=architecture_config)  # fmt: skip
        return p.stat().st_size


def measure_stage(
    model: nn.Module, test: Any, *, architecture: str | None, architecture_config: dict[str, Any] | None,
    latency_runs: int, size_bytes: int | None = None, metric: Any = "accuracy", reference: nn.Module | None = None,
    runtime: Any = None,
    runtime_name: str = "eager",
    speed_reference: tuple[nn.Module, Any, str] | None = None,
    speed_runs: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The metric, file size, MACs, sparsity, latency at batch 1 and 64, per-layer table.

    ``test`` is an ``ImageData`` or any :mod:`torchslim.data.protocol` data; latency and MACs use
    its first batch. ``runtime`` (a callable with the model's signature) is what gets timed.
    With ``speed_reference`` = ``(model, its runtime, the runtime's name)`` the stage is timed
    interleaved with that model (:func:`~torchslim.measure.speed.speed_check`): the latencies are
    from those runs (``speed_runs`` of them, default ``latency_runs``), ``speedup_b1`` /
    ``speedup_b64`` compare the two, ``speed`` holds the check.
    """
    from torchslim.measure.metrics import compute_metric

    with kept_mode(model):
        model.eval()
        res = compute_metric(model, test, metric, reference=reference)
        out: dict[str, Any] = {"metric": res["metric"], "metric_value": res["value"]}
        # the metric's details too: accuracy, or fidelity's mean_cos / min_cos / nn_agreement, and samples
        out.update({k: v for k, v in res.items() if k not in ("metric", "value", res["metric"])})
        if res["metric"] == "accuracy":
            out["accuracy"] = res["value"]
        out["size_bytes"] = size_bytes if size_bytes is not None else saved_file_size(model, architecture, architecture_config)
        out.update(count_params(model))
        layers = layer_table(model)
        total = sum(r["numel"] for r in layers)
        out["sparsity"] = sum(r["sparsity"] * r["numel"] for r in layers) / total if total else 0.0
        first = first_input(test)
        example = first.resized(1).example()
        try:
            out["macs"] = count_macs(model, example)
        except Exception:  # noqa: BLE001 - an operator without a FLOP formula; counted per layer below
            out["macs"] = 0
        # Integer kernels have no FLOP formula (FlopCounterMode skips them): count those layers from
        # their shapes and keep the larger figure, so MACs stay the dense-equivalent count.
        out["macs"] = max(out["macs"] or 0, layer_macs(model, example) or 0) or None
        out["latency_runtime"] = runtime_name if runtime is not None else "eager"
        if speed_reference is not None:
            ref, ref_runtime, ref_name = speed_reference
            check = speed_check(model, ref, first, runtime=runtime, reference_runtime=ref_runtime,
                                runtime_name=out["latency_runtime"], reference_runtime_name=ref_name, runs=speed_runs or latency_runs,
                                threads=torch.get_num_threads())  # fmt: skip
            out.update(latency_ms_b1=check.latency_ms_b1, latency_ms_b64=check.latency_ms,
                       speedup_b1=check.speedup_b1, speedup_b64=check.speedup, speed=check.as_dict())  # fmt: skip
        else:
            for b in (1, 64):
                st = measure_latency(runtime if runtime is not None else model, first.resized(b).example(),
                                     runs=latency_runs, warmup=max(2, latency_runs // 5), threads=torch.get_num_threads())  # fmt: skip
                out[f"latency_ms_b{b}"] = st.median_ms
        out["layers"] = layers
    return out
