"""Swapping layers of a user's model safely: one replace helper, and the torch modules that read
a child layer's float weight themselves (so a quantized child must not replace it, or their fused
fast path must be switched off)."""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Iterable
from typing import Any

import torch.nn as nn


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``name`` inside ``model`` (``""`` is not allowed: the root has no parent).

    >>> m = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> replace_module(m, "1", nn.Tanh()); m[1]
    Tanh()
    """
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


# Parents whose forward reads a child Linear's weight/bias tensors instead of calling the child, so
# a swapped-in quantized layer (which has no float ``weight``) breaks them. Known by type, and
# found in any other module by reading its forward's source for ``self.<child>.weight`` / ``.bias``
# (torchvision's ShiftedWindowAttention, timm-style fused attention...).
_READS_CHILD_WEIGHT: dict[type[nn.Module], tuple[str, ...]] = {nn.MultiheadAttention: ("out_proj",)}
_SOURCE_READS: dict[type, frozenset[str]] = {}
_FAST_PATH_ONLY = (nn.TransformerEncoderLayer, nn.TransformerEncoder)
_READ = re.compile(r"self\.(\w+)\.(?:weight|bias)\b")


def _children_read_in_forward(parent: nn.Module) -> frozenset[str]:
    cls = type(parent)
    if cls not in _SOURCE_READS:
        try:
            names = frozenset(_READ.findall(textwrap.dedent(inspect.getsource(cls.forward))))
        except (OSError, TypeError):  # built in or generated: no source to read
            names = frozenset()
        _SOURCE_READS[cls] = names
    return _SOURCE_READS[cls]


def weight_read_by_parent(model: nn.Module) -> dict[str, str]:
    """``{layer name: reason}`` for Linear layers that must stay float because their parent reads their weight.

    >>> class Fused(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.qkv = nn.Linear(4, 12)
    ...     def forward(self, x):
    ...         return nn.functional.linear(x, self.qkv.weight)
    >>> weight_read_by_parent(nn.Sequential(Fused()))
    {'0.qkv': "Fused.forward reads qkv's weight directly; kept in float"}
    """
    out: dict[str, str] = {}
    for pname, parent in model.named_modules():
        # These read their Linears' weights only on the fused fast path, which avoid_fused_paths turns off.
        attrs = set() if isinstance(parent, _FAST_PATH_ONLY) else set(_children_read_in_forward(parent))
        why = f"{type(parent).__name__}.forward reads {{a}}'s weight directly; kept in float"
        for ptype, known in _READS_CHILD_WEIGHT.items():
            if isinstance(parent, ptype):
                attrs |= set(known)
                why = f"nn.{ptype.__name__} reads {{a}}'s weight directly; kept in float"
        for a in sorted(attrs):
            if isinstance(getattr(parent, a, None), nn.Linear):
                out[f"{pname}.{a}" if pname else a] = why.format(a=a)
    for name, m in model.named_modules():
        # torch marks such layers with this subclass (any parent, not only MultiheadAttention).
        if isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear) and name not in out:
            out[name] = "a NonDynamicallyQuantizableLinear: its parent reads its weight directly; kept in float"
    return out


def _no_op_hook(_m: nn.Module, _args: Any) -> None:
    return None


def avoid_fused_paths(model: nn.Module, swapped: Iterable[str]) -> list[str]:
    """Keep torch's fused Transformer kernels, which read each Linear's float ``weight``, off the
    encoder layers that now hold quantized Linears; returns the modules changed."""
    swapped = set(swapped)
    off = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            continue
        prefix = f"{name}." if name else ""
        if not any(s.startswith(prefix) for s in swapped):
            continue
        if isinstance(m, nn.TransformerEncoder):
            m.use_nested_tensor = False  # its nested-tensor check reads layers[0]'s Linear weights
        else:
            # torch checks for hooks before it reads the weights, and takes the fast path only without them.
            m.register_forward_pre_hook(_no_op_hook)
        off.append(name or "<root>")
    return off


def check_finite(model: nn.Module, verb: str) -> None:
    """Raise :class:`~torchslim.errors.ModelError` naming every float parameter or buffer that holds
    NaN or infinite values: every verb refuses such a model before work, instead of returning
    "7% accuracy" or a quantization scale of NaN."""
    import torch

    from torchslim.errors import ModelError

    if not isinstance(model, nn.Module):
        return
    bad = []
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad.append(f"{name} ({int((~torch.isfinite(t)).sum())} of {t.numel()})")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ModelError(
            f"{verb}: the model holds NaN or infinite values in {', '.join(bad[:5])}{more}; it is broken (a diverged "
            "training run or a corrupt file): reload or retrain it"
        )
