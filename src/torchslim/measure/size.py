"""Parameter counts, sparsity and the size of the real saved file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn as nn


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    # Under pruning reparametrisation the effective weight is the attribute, not weight_orig.
    out = {}
    for mname, m in model.named_modules():
        deq = getattr(m, "dequantized_weight", None)
        if callable(deq):  # a quantized layer: its integer weight (a buffer) stands for a float one
            prefix = f"{mname}." if mname else ""
            out[prefix + "weight"] = deq()
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor):
                out[prefix + "bias"] = bias
            continue
        for pname, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if pname.endswith("_orig") and hasattr(m, pname[: -len("_orig")]):
                pname = pname[: -len("_orig")]
                p = getattr(m, pname)
            elif pname.endswith("_mask") or not isinstance(p, nn.Parameter):
                continue
            out[f"{mname}.{pname}" if mname else pname] = p
    return out


def count_params(model: nn.Module) -> dict[str, int]:
    """``{"params": ..., "nonzero_params": ...}`` over trainable tensors, masks applied."""
    ws = _weights(model)
    total = sum(t.numel() for t in ws.values())
    nz = sum(int((t != 0).sum()) for t in ws.values())
    return {"params": total, "nonzero_params": nz}


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights across Conv/Linear weight tensors."""
    total = zeros = 0
    for name, t in _weights(model).items():
        if name.endswith("weight") and t.dim() > 1:
            total += t.numel()
            zeros += int((t == 0).sum())
    return zeros / total if total else 0.0


def file_size(path: str | Path) -> int:
    """Bytes on disk of a saved artifact (a file, or every file in a folder)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def saved_size(model: nn.Module, architecture: str | None = None, **kw: object) -> int:
    """Size in bytes of ``model`` saved as a torchslim checkpoint (the .safetensors file)."""
    from torchslim.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as d:
        p = save_checkpoint(model, Path(d) / "m.safetensors", architecture=architecture, **kw)  # type: ignore[arg-type]
        return p.stat().st_size
