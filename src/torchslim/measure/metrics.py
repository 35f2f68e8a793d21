"""Metrics over any data: built-in names, a user callable, or a torchmetrics metric.

* ``"accuracy"``: top-1 accuracy in percent of the output logits against the targets.
* ``"fidelity"``: embedding fidelity to a ``reference`` model (mean / min cosine and top-1
  nearest-neighbour agreement; the value is the mean cosine).
* ``"output_error"``: ``||output - reference output|| / ||reference output||`` (lower is better).
* a callable ``metric(output, target) -> number`` (one number per batch, averaged over samples),
  or any object with ``update(output, target)`` and ``compute()`` (a ``torchmetrics`` metric).

>>> import torch, torch.nn as nn
>>> data = [(torch.eye(4), torch.arange(4))]
>>> compute_metric(nn.Identity(), data, "accuracy")["accuracy"]
100.0
>>> compute_metric(nn.Identity(), data, lambda out, y: (out.argmax(1) == y).float().mean())["value"]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from torchslim.data.protocol import as_data, output_tensor
from torchslim.errors import ConfigError, DataError

BUILTIN = ("accuracy", "fidelity", "output_error")


def metric_name(metric: Any) -> str:
    if isinstance(metric, str):
        return metric
    return getattr(metric, "__name__", None) or type(metric).__name__


def higher_is_better(metric: Any) -> bool:
    if isinstance(metric, str):
        return metric != "output_error"
    return bool(getattr(metric, "higher_is_better", True))


def check_metric(metric: Any, reference: nn.Module | None) -> None:
    """Raise before any work if ``metric`` cannot be computed."""
    if isinstance(metric, str):
        if metric not in BUILTIN:
            raise ConfigError(f"unknown metric {metric!r}; choose one of {list(BUILTIN)}, or pass a callable")
        if metric in ("fidelity", "output_error") and reference is None:
            raise ConfigError(f"metric {metric!r} compares with a reference model: pass reference=<the FP32 model>")
    elif not (callable(metric) or (hasattr(metric, "update") and hasattr(metric, "compute"))):
        raise ConfigError(f"metric must be a name, a callable or a torchmetrics metric, got {type(metric).__name__}")


def _scalar(v: Any, name: str) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise DataError(f"metric {name} returned a tensor of shape {tuple(v.shape)}; it must return one number per batch")
        v = v.item()
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise DataError(f"metric {name} returned {type(v).__name__}; it must return one number") from exc
    return f


@torch.inference_mode()
def compute_metric(
    model: Callable[..., Any],
    data: Any,
    metric: Any = "accuracy",
    *,
    reference: nn.Module | None = None,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """The metric of ``model`` over ``data`` (any :mod:`torchslim.data.protocol` source).

    Returns ``{"metric": name, "value": value, name: value, "samples": n}`` plus the fidelity details for
    ``"fidelity"``. ``model`` is called as it is (put it in eval mode first).
    """
    check_metric(metric, reference)
    data = as_data(data)
    if isinstance(model, nn.Module):
        data.bind(model)
    name = metric_name(metric)
    stateful = not isinstance(metric, str) and hasattr(metric, "update") and hasattr(metric, "compute")
    if stateful and hasattr(metric, "reset"):
        metric.reset()
    total = n = 0.0
    outs: list[torch.Tensor] = []
    refs: list[torch.Tensor] = []
    err_num = err_den = 0.0
    for batch in data.limited(max_batches):
        inp = data.inputs(batch)
        out = inp(model)
        bs = inp.batch_size
        if metric in ("fidelity", "output_error"):
            o, r = output_tensor(out).float(), output_tensor(inp(reference)).float()
            if o.shape != r.shape:
                raise DataError(f"output shape {tuple(o.shape)} differs from the reference's {tuple(r.shape)}")
            if metric == "fidelity":
                mask = inp.kwargs.get("attention_mask")
                outs.append(pooled_embedding(o, mask))
                refs.append(pooled_embedding(r, mask))
            else:
                err_num += float(((o - r) ** 2).sum())
                err_den += float((r**2).sum())
        else:
            target = data.target(batch)
            if metric == "accuracy":
                if target is None:
                    raise DataError("metric 'accuracy' needs targets: batches as (inputs, labels) or pass target_fn")
                logits = output_tensor(out)
                if logits.dim() != 2 or logits.shape[0] != len(target):
                    raise DataError(
                        f"metric 'accuracy' needs [batch, classes] logits; the model returned {tuple(logits.shape)} "
                        f"for {len(target)} targets; pass a metric that reads this output"
                    )
                total += float((logits.argmax(1) == target.to(logits.device)).sum())
            elif stateful:
                metric.update(out, target)
            else:
                total += _scalar(metric(out, target), name) * bs
        n += bs
    if n == 0:
        raise DataError("the evaluation data has no batches; pass non-empty data")
    result: dict[str, Any] = {"metric": name, "samples": int(n)}
    if metric == "accuracy":
        result[name] = 100.0 * total / n
    elif metric == "fidelity":
        from torchslim.measure.accuracy import embedding_fidelity

        fid = embedding_fidelity(torch.cat(refs), torch.cat(outs))
        result.update(fid)
        result[name] = fid["mean_cos"]
    elif metric == "output_error":
        result[name] = math.sqrt(err_num / max(err_den, 1e-30))
    elif stateful:
        result[name] = _scalar(metric.compute(), name)
    else:
        result[name] = total / n
    result["value"] = result[name]
    if not math.isfinite(result[name]):
        raise DataError(f"metric {name} is {result[name]} (the model's outputs hold NaN or infinite values)")
    return result


def pooled_embedding(t: torch.Tensor, mask: Any = None) -> torch.Tensor:
    """One vector per sample: token states ``[B, T, D]`` are mean-pooled over the real tokens (the
    batch's ``attention_mask``, as sentence-transformers pool), anything else flattened.

    >>> h = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]]])
    >>> pooled_embedding(h, torch.tensor([[1, 1, 0]])).tolist()
    [[2.0, 2.0]]
    """
    if t.dim() != 3:
        return t.reshape(len(t), -1)
    if isinstance(mask, torch.Tensor) and mask.shape == t.shape[:2]:
        m = mask.to(t.dtype).unsqueeze(-1)
        return (t * m).sum(1) / m.sum(1).clamp(min=1.0)
    return t.mean(1)
