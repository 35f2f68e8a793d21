"""The step registry: a recipe step ``{type: T, ...}`` is validated by T's config class and run by T's function.

Every verb's methods register here (``register_step``), so YAML recipes and Python share one
list of names and one set of config classes. Steps also declare what state they leave the
model in (``produces``) and which states they cannot follow (``forbidden_after``), so an
impossible order (structured pruning after INT8 conversion) is refused before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch.nn as nn
from pydantic import BaseModel

from torchslim.errors import UnknownNameError, suggest
from torchslim.layer_report import Report

if TYPE_CHECKING:
    from torchslim.recipes.context import StepContext

RunFn = Callable[[nn.Module, Any, "StepContext"], "tuple[nn.Module, Report | None]"]

# Model states a step can leave behind; see ``forbidden_after``.
QUANTIZED = "quantized"  # converted to integer / low-precision kernels: no more float training or pruning
SHARED = "shared"  # weights are codebook indices (weight sharing)
CODED = "coded"  # Huffman-coded storage: final form
SPARSE = "sparse"  # unstructured zeros (informational)
STRUCTURED = "structured"  # channels removed (informational)


@dataclass(frozen=True)
class StepType:
    type: str
    config_cls: type[BaseModel]
    run: RunFn
    description: str = ""
    produces: frozenset[str] = frozenset()
    forbidden_after: Mapping[str, str] = field(default_factory=dict)  # state -> why
    requires: Mapping[str, str] = field(default_factory=dict)  # state -> what to add before
    accepts_targets: bool = False


_STEPS: dict[str, StepType] = {}
_ALIASES: dict[str, str] = {}


def register_step(
    type: str,
    config_cls: type[BaseModel],
    run_fn: RunFn,
    *,
    description: str = "",
    produces: Iterable[str] = (),
    forbidden_after: Mapping[str, str] | None = None,
    requires: Mapping[str, str] | None = None,
    accepts_targets: bool = False,
    aliases: Iterable[str] = (),
) -> StepType:
    """Register a recipe step type (replacing an earlier one of the same name).

    ``run_fn(model, config, ctx) -> (new_model, report_or_None)`` must not modify ``model``.

    >>> from pydantic import BaseModel
    >>> class Noop(BaseModel):
    ...     pass
    >>> st = register_step("noop_example", Noop, lambda m, c, ctx: (m, None))
    >>> get_step("noop_example").config_cls.__name__
    'Noop'
    """
    st = StepType(
        type, config_cls, run_fn, description or (config_cls.__doc__ or "").strip().split("\n")[0],
        frozenset(produces), dict(forbidden_after or {}), dict(requires or {}), accepts_targets,
    )  # fmt: skip
    _STEPS[type] = st
    for a in aliases:
        _ALIASES[a] = type
    return st


def _ensure_builtin() -> None:
    from torchslim.recipes import steps

    steps.register_builtin()


def step_types() -> list[str]:
    """Every registered step type name, sorted."""
    _ensure_builtin()
    return sorted(_STEPS)


def get_step(type: str) -> StepType:
    _ensure_builtin()
    name = _ALIASES.get(type, type)
    if name not in _STEPS:
        raise UnknownNameError(
            f"unknown step type {type!r}.{suggest(type, list(_STEPS) + list(_ALIASES))} "
            f"Known types: {', '.join(sorted(_STEPS))}"
        )
    return _STEPS[name]
