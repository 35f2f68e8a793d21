"""Which layers each quantization method can take, and why not.

The predicates the method registry carries (``register_method(..., applies=..., applies_detail=...)``
in this package's ``__init__``), built on the same checks the methods run: the layer types each
handler converts, :func:`~torchslim.surgery.weight_read_by_parent` (layers whose parent reads their
float weight), the torch.fx trace and plan of the static path (:mod:`torchslim.quantization.graph`)
and the storage of the integer layers. ``torchslim.inspect`` asks them about every layer.

>>> import torch.nn as nn
>>> mha = nn.MultiheadAttention(8, 2)
>>> int8_dynamic(mha, "out_proj", mha.out_proj, None)
"nn.MultiheadAttention reads out_proj's weight directly; kept in float"
>>> int8_dynamic(mha, "", nn.LayerNorm(8), None)
'LayerNorm is not an nn.Linear: dynamic INT8 quantizes Linear layers only (static INT8 takes Conv2d)'
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from torchslim.errors import CompatibilityError
from torchslim.methods import layer_label, model_fact, one_line
from torchslim.surgery import weight_read_by_parent

# The layer types each handler converts (api.py: dynamic / weight-only swap nn.Linear; the static
# path plans Conv2d and Linear on the FX graph).
DYNAMIC_TYPES = (nn.Linear,)
STATIC_TYPES = (nn.Conv2d, nn.Linear)


def _kept(model: nn.Module) -> dict[str, str]:
    return model_fact(model, "weight_read_by_parent", lambda: weight_read_by_parent(model))


def _linear_reason(model: nn.Module, name: str, module: nn.Module, what: str, hint: str) -> str | None:
    if not isinstance(module, DYNAMIC_TYPES):
        return f"{layer_label(module)} is not an nn.Linear: {what} quantizes Linear layers only{hint}"
    return _kept(model).get(name)


# ----------------------------------------------------------------------------- dynamic INT8
def int8_dynamic(model: nn.Module, name: str, module: nn.Module, example: Any) -> str | None:
    """Why :class:`DynamicInt8Config` cannot take ``module`` (``None``: it can)."""
    return _linear_reason(model, name, module, "dynamic INT8", " (static INT8 takes Conv2d)")


def int8_dynamic_detail(model: nn.Module, name: str, module: nn.Module, example: Any) -> str:
    return ("Int8DynamicLinear (int8 per-channel weights, activations quantized per token at run time): oneDNN int8 "
            "GEMM (eager), compile_int8 (torch.compile), ONNX Runtime (QDQ export)")  # fmt: skip


# ----------------------------------------------------------------------------- weight-only
def weight_only(model: nn.Module, name: str, module: nn.Module, example: Any) -> str | None:
    """Why :class:`WeightOnlyConfig` cannot take ``module`` (``None``: it can)."""
    return _linear_reason(model, name, module, "weight-only quantization", "")


def weight_only_detail(model: nn.Module, name: str, module: nn.Module, example: Any) -> str:
    from torchslim.quantization.config import WeightOnlyConfig

    c = WeightOnlyConfig()
    return (f"WeightOnlyLinear (int{c.bits}, groups of {c.group_size}, fp16 scales): dequantized on the fly into a "
            "float GEMM (smaller, not faster); ONNX Runtime (DequantizeLinear, opset 21)")  # fmt: skip


# ----------------------------------------------------------------------------- static INT8
class StaticFacts:
    """What the static path sees of a whole model: its torch.fx trace (or why it has none), the
    layers called as modules in it, the BatchNorms it folds and the plan of every candidate."""

    def __init__(self, model: nn.Module) -> None:
        from torchslim.quantization.graph import fold_batchnorm, make_plan, trace

        self.error: str | None = None
        self.called: set[str] = set()
        self.folded: dict[str, str] = {}  # BatchNorm -> the Conv2d it folds into
        self.plan: Any = None
        self.plan_error: str | None = None
        try:
            gm = trace(model)
        except CompatibilityError as exc:
            self.error = one_line(str(exc), 400)
            return
        self.called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
        try:
            import copy

            folded = copy.deepcopy(model).eval()
            self.folded = {bn: conv for conv, bn in fold_batchnorm(folded)}
            kept = weight_read_by_parent(model)
            mods = dict(model.named_modules())
            layers = [n for n in self.called if isinstance(mods.get(n), STATIC_TYPES) and n not in kept]
            self.plan = make_plan(trace(folded), layers)
        except Exception as exc:  # noqa: BLE001 - the plan only adds detail; its failure is named, not raised
            self.plan_error = f"{type(exc).__name__}: {one_line(str(exc))}"

    def enclosing(self, model: nn.Module, name: str) -> str | None:
        """The module torch.fx keeps whole (a leaf of the trace) that contains layer ``name``."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:i])
            if parent in self.called:
                return parent
        return None


def static_facts(model: nn.Module) -> StaticFacts:
    """:class:`StaticFacts` of ``model`` (computed once inside :func:`torchslim.methods.shared_facts`)."""
    return model_fact(model, "static_int8", lambda: StaticFacts(model))


def static_conv_unfit(module: nn.Module) -> str | None:
    """Why ``QConv2d`` cannot compute this ``nn.Conv2d`` exactly: it takes numeric padding, zero padded."""
    if not isinstance(module, nn.Conv2d):
        return None
    if isinstance(module.padding, str):
        return f"Conv2d with padding={module.padding!r}: the integer QConv2d takes numeric padding only"
    if module.padding_mode != "zeros":
        return (f"Conv2d with padding_mode={module.padding_mode!r}: the integer QConv2d pads with zeros only, "
                "so its output would change")  # fmt: skip
    return None


def int8_static(model: nn.Module, name: str, module: nn.Module, example: Any) -> str | None:
    """Why :class:`StaticInt8Config` cannot take ``module`` (``None``: it can)."""
    t = layer_label(module)
    facts = static_facts(model)
    if isinstance(module, nn.BatchNorm2d) and name in facts.folded:
        return f"BatchNorm2d has no integer kernel of its own: static INT8 folds it into {facts.folded[name]}"
    if not isinstance(module, STATIC_TYPES):
        return f"{t} has no integer kernel: static INT8 converts Conv2d and Linear layers only; it stays float"
    kept = _kept(model)
    if name in kept:
        return kept[name]
    unfit = static_conv_unfit(module)
    if unfit is not None:
        return unfit
    if facts.error is not None:
        return f"{t} in an untraceable model: {facts.error}"
    if name not in facts.called:
        inside = facts.enclosing(model, name)
        if inside is not None:
            return (f"{t} is not called as a module in the traced graph (it runs inside {type(model.get_submodule(inside)).__name__} "
                    f"{inside}, which torch.fx keeps whole); static INT8 would keep it float")  # fmt: skip
        return f"{t} is never called as a module in the traced forward (its weight is used another way, or not at all)"
    return None


def int8_static_detail(model: nn.Module, name: str, module: nn.Module, example: Any) -> str:
    facts = static_facts(model)
    lp = facts.plan.layers.get(name) if facts.plan is not None else None
    how = []
    if isinstance(module, nn.Conv2d):
        folded = [bn for bn, conv in facts.folded.items() if conv == name]
        if folded:
            how.append(f"{folded[0]} folded in")
    if lp is not None:
        if lp.fuse != "none":
            how.append(f"fused {lp.fuse.replace('_', '+')}")
        how.append("float output" if lp.out_float else "integer output to the next layer")
    kind = "QConv2d" if isinstance(module, nn.Conv2d) else "QLinear"
    onnx = "ONNX Runtime (QDQ export)"
    if isinstance(module, nn.Conv2d) and module.groups != 1:  # torchslim.export.cnn.static_specs refuses these
        onnx = f"not ONNX yet (grouped convolution, groups={module.groups})"
    return f"{kind}{' (' + ', '.join(how) + ')' if how else ''}: oneDNN integer kernels (eager), compile_int8, {onnx}"


def folded_batchnorms(model: nn.Module) -> dict[str, str]:
    """``{BatchNorm2d name: Conv2d name}`` for the BatchNorms static INT8 folds into a convolution."""
    return static_facts(model).folded


__all__ = ["folded_batchnorms", "int8_dynamic", "int8_static", "static_conv_unfit", "weight_only"]
