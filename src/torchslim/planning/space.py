"""What the planner may choose per layer, how a choice becomes a model, and how it becomes a recipe.

A *choice* for one layer is a pruning ratio and a bit width (32 = float, 8 = INT8, 4 = INT4).
An *assignment* gives every planned layer a choice. The same assignment builds a model through
the public verbs (``prune`` then ``quantize`` with the one targeting rule) and writes the recipe
that ``compress`` runs, so what the planner scores is what the recipe ships.

Which verbs implement a choice depends on the objective and the model:

* pruning: ``magnitude`` (unstructured) when the objective is size, ``structured`` (channels
  removed, so MACs and latency fall) for ``macs`` and ``latency``;
* precision: static INT8 (``int8_static``) when calibration data exists and the model has
  convolutions; otherwise weight-only INT8/INT4 (``weight_only``) for size, dynamic INT8
  (``int8_dynamic``) for latency. MACs do not change with precision, so ``macs`` plans none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from torchslim.errors import ConfigError

OBJECTIVES = ("size", "latency", "macs")
FLOAT = 32


@dataclass(frozen=True, order=True)
class Choice:
    """One layer's setting: ``prune`` is the fraction removed, ``bits`` 32 (float), 8 or 4."""

    prune: float = 0.0
    bits: int = FLOAT

    @property
    def label(self) -> str:
        prec = "float" if self.bits == FLOAT else f"int{self.bits}"
        return f"{prec}" if self.prune == 0 else f"{prec}, {self.prune:.0%} pruned"


NONE = Choice()
Assignment = dict[str, Choice]


@dataclass
class LayerSpace:
    """The options of one layer: pruning ratios (0 included) and bit widths (32 included)."""

    name: str
    type: str
    weights: int
    prune: tuple[float, ...] = (0.0,)
    bits: tuple[int, ...] = (FLOAT,)
    why_not: dict[str, str] = field(default_factory=dict)  # option -> reason it was removed


@dataclass
class Space:
    objective: str
    prune_method: str | None  # "magnitude" | "structured" | None
    quant_method: str | None  # "int8_static" | "weight_only" | "int8_dynamic" | None
    layers: dict[str, LayerSpace]
    group_size: int = 32  # weight-only groups

    def options(self, name: str) -> list[Choice]:
        ls = self.layers[name]
        return [Choice(p, b) for p in ls.prune for b in ls.bits]

    def uniform(self, choice: Choice) -> Assignment:
        """Every layer at ``choice`` where it has that option (else its nearest weaker option)."""
        out = {}
        for n, ls in self.layers.items():
            p = max((r for r in ls.prune if r <= choice.prune), default=0.0)
            b = min((x for x in ls.bits if x >= choice.bits), default=FLOAT)
            out[n] = Choice(p, b)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective, "prune_method": self.prune_method, "quant_method": self.quant_method,
            "layers": {n: {"type": s.type, "weights": s.weights, "prune": list(s.prune), "bits": list(s.bits),
                           **({"why_not": s.why_not} if s.why_not else {})} for n, s in self.layers.items()},
        }  # fmt: skip


def _weight_layers(model: nn.Module, types: tuple[type[nn.Module], ...]) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if n and isinstance(m, types) and isinstance(getattr(m, "weight", None), nn.Parameter)}


def make_space(
    model: nn.Module,
    objective: str,
    *,
    calibration: bool,
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9),
    prune: bool = True,
    quantize: bool = True,
    bits: tuple[int, ...] | None = None,
) -> Space:
    """The per-layer options for ``objective`` (see the module docstring)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
    if any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"pruning ratios must lie in (0, 1), got {list(ratios)}")
    from torchslim.quantization.api import weight_read_by_parent

    kept = weight_read_by_parent(model)  # e.g. MultiheadAttention's out_proj: its parent reads .weight
    convs = _weight_layers(model, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    linears = {n: m for n, m in _weight_layers(model, (nn.Linear,)).items()}
    prune_method = None if not prune else "magnitude" if objective == "size" else "structured"
    quant_method: str | None = None
    qbits: tuple[int, ...] = ()
    if quantize and objective != "macs":
        if calibration and any(isinstance(m, nn.Conv2d) for m in convs.values()):
            quant_method, qbits = "int8_static", (8,)
        elif linears:
            quant_method, qbits = ("weight_only", (8, 4)) if objective == "size" else ("int8_dynamic", (8,))
    if bits is not None:
        qbits = tuple(b for b in qbits if b in bits)
    qtypes: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear) if quant_method == "int8_static" else (nn.Linear,)
    layers: dict[str, LayerSpace] = {}
    for n, m in {**convs, **linears}.items():
        ls = LayerSpace(n, type(m).__name__, m.weight.numel())
        if prune_method is not None:
            ls.prune = (0.0, *ratios)
        if quant_method is not None and isinstance(m, qtypes):
            if n in kept:
                ls.why_not["quantize"] = kept[n]
            else:
                ls.bits = (FLOAT, *qbits)
        if len(ls.prune) > 1 or len(ls.bits) > 1:
            layers[n] = ls
    if not layers:
        raise ConfigError(
            f"nothing to plan for objective {objective!r}: the model has no Conv/Linear layer that "
            f"{'pruning or quantization' if objective != 'macs' else 'structured pruning'} applies to"
        )
    return Space(objective, prune_method, quant_method, layers)


# ----------------------------------------------------------------------------- choices -> steps
def _type_guards(model: nn.Module, types: tuple[type[nn.Module], ...], named: Mapping[str, Any]) -> dict[str, None]:
    """``{TypeName: None}`` for each type with a layer not named in ``named``: those layers stay alone
    (a type pattern that would match nothing is an error in the targeting rule, so none is written)."""
    left = {type(m).__name__ for n, m in model.named_modules() if n and n not in named and isinstance(m, types)}
    return {t.__name__: None for t in types if t.__name__ in left}


def prune_step(model: nn.Module, space: Space, assign: Mapping[str, Choice]) -> dict[str, Any] | None:
    ratios = {n: round(c.prune, 4) for n, c in assign.items() if c.prune > 0}
    if not ratios or space.prune_method is None:
        return None
    if space.prune_method == "magnitude":
        guards = _type_guards(model, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear), ratios)
        return {"type": "magnitude", "amount": 0.0, "targets": {**guards, **ratios}}
    guards = _type_guards(model, (nn.Conv1d, nn.Conv2d, nn.Linear), ratios)
    return {"type": "structured", "ratio": 0.0, "targets": {**guards, **ratios}}


def quant_step(space: Space, assign: Mapping[str, Choice]) -> dict[str, Any] | None:
    method = space.quant_method
    if method is None or all(c.bits == FLOAT for c in assign.values()):
        return None
    quantizable = [n for n, ls in space.layers.items() if len(ls.bits) > 1]
    assign = {n: assign.get(n, NONE) for n in quantizable}
    if method == "weight_only":
        targets = {n: (assign[n].bits if assign[n].bits != FLOAT else None) for n in quantizable}
        return {"type": "weight_only", "bits": 8, "group_size": space.group_size, "targets": targets}
    floats = {n: None for n in quantizable if assign[n].bits == FLOAT}
    # layers outside the space that the method would take by default (none: every Conv/Linear is planned or refused)
    step: dict[str, Any] = {"type": method}
    if floats:
        step["targets"] = floats
    return step


def steps_for(model: nn.Module, space: Space, assign: Mapping[str, Choice], finetune: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The recipe steps of an assignment: prune, fine-tune (when pruned), quantize."""
    steps = []
    p = prune_step(model, space, assign)
    if p is not None:
        steps.append(p)
        if finetune:
            steps.append({"type": "finetune", **finetune})
    q = quant_step(space, assign)
    if q is not None:
        steps.append(q)
    return steps


# ----------------------------------------------------------------------------- size model
def stored_weight_bytes(numel: int, choice: Choice, space: Space) -> float:
    """Bytes a layer's weight takes in a torchslim checkpoint (mirrors the checkpoint's encodings).

    Float and symmetric INT8 weights keep pruned zeros as zeros, stored as a bitmask plus the
    non-zeros when that is smaller; weight-only layers store asymmetric groups (a zero weight is not
    a zero code), so pruning does not shrink them.
    """
    if space.prune_method == "structured":
        numel = math.ceil(numel * (1 - choice.prune))
        density = 1.0
    else:
        density = 1 - choice.prune
    if choice.bits == FLOAT:
        bits = 32.0
    elif space.quant_method == "weight_only":
        groups = math.ceil(numel / space.group_size)
        return numel * choice.bits / 8 + groups * 4  # fp16 scale + fp16 zero point per group
    else:
        bits = float(choice.bits)
    dense = numel * bits / 8
    sparse = numel / 8 + numel * density * bits / 8
    return sparse if density < 1 and sparse < 0.97 * dense else dense


def build(model: nn.Module, space: Space, assign: Mapping[str, Choice], calib: Any) -> nn.Module:
    """The model an assignment describes, through the public verbs (without the fine-tuning).

    ``calib`` is calibration data (static INT8) and the example structured pruning traces with.
    The user's ``model`` is never modified.
    """
    from torchslim.recipes.registry import get_step

    current = model
    p = prune_step(model, space, assign)
    if p is not None:
        from torchslim.pruning import MagnitudeConfig, StructuredConfig, prune

        cfg = MagnitudeConfig(amount=0.0) if p["type"] == "magnitude" else StructuredConfig(ratio=0.0)
        current, _ = prune(current, cfg, targets=p["targets"], calib_data=calib if p["type"] == "structured" else None)
        if p["type"] == "magnitude":
            from torchslim.pruning import make_permanent

            current = make_permanent(current)
    q = quant_step(space, assign)
    if q is not None:
        from torchslim.quantization import quantize

        spec = get_step(q["type"])
        cfg = spec.config_cls(**{k: v for k, v in q.items() if k not in ("type", "targets")})
        current, _ = quantize(current, cfg, targets=q.get("targets"), calib_data=calib if q["type"] == "int8_static" else None)
    return current if current is not model else _copy(model)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval()
