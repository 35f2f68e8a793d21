"""The step registry: a recipe step ``{type: T, ...}`` is validated by T's config class and run by T's function.

Two sources, one list of names: every method in :mod:`torchslim.methods` (quantization, pruning,
and any method registered later) is a step of the same name, generated from its entry; the
recipe-only steps (fine-tuning, evaluation, Deep Compression, export) register here with
``register_step``. Steps declare what state they leave the model in (``produces``) and which
states they cannot follow (``forbidden_after``), so an impossible order (structured pruning after
INT8 conversion) is refused before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch.nn as nn
from pydantic import BaseModel

from torchslim.errors import UnknownNameError, suggest
from torchslim.layer_report import Report
from torchslim.methods import CODED, QUANTIZED, SHARED, SPARSE, STRUCTURED, Method, methods

__all__ = ["CODED", "QUANTIZED", "SHARED", "SPARSE", "STRUCTURED", "StepType", "get_step", "register_step", "step_types"]

if TYPE_CHECKING:
    from torchslim.recipes.context import StepContext

RunFn = Callable[[nn.Module, Any, "StepContext"], "tuple[nn.Module, Report | None]"]


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


_METHOD_STEPS: dict[Method, StepType] = {}


def _ensure_builtin() -> None:
    if "evaluate" not in _STEPS:  # the recipe-only steps, registered into this registry on first use
        from torchslim.recipes import steps

        steps.register_builtin(register_step)


def _method_step(m: Method) -> StepType:
    """The step of registry entry ``m`` (built once per entry)."""
    st = _METHOD_STEPS.get(m)
    if st is None:
        from torchslim.recipes.steps import run_method

        def run(model: nn.Module, config: Any, ctx: StepContext) -> tuple[nn.Module, Report | None]:
            return run_method(m, model, config, ctx)

        st = _METHOD_STEPS[m] = StepType(m.name, m.config_cls, run, m.description, m.produces,
                                         dict(m.forbidden_after), {}, m.accepts_targets)  # fmt: skip
    return st


def _all_steps() -> dict[str, StepType]:
    _ensure_builtin()
    out = {m.name: _method_step(m) for m in methods()}
    out.update(_STEPS)
    return out


def step_types() -> list[str]:
    """Every registered step type name, sorted."""
    return sorted(_all_steps())


def get_step(type: str) -> StepType:
    """The step called ``type`` (a method name or a recipe-only step), with a did-you-mean error."""
    steps = _all_steps()
    name = _ALIASES.get(type, type)
    if name not in steps:
        raise UnknownNameError(
            f"unknown step type {type!r}.{suggest(type, list(steps) + list(_ALIASES))} "
            f"Known types: {', '.join(sorted(steps))}"
        )
    return steps[name]


def _field_rows(cls: type[BaseModel]) -> list[str]:
    import re

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    rows = []
    for name, f in cls.model_fields.items():
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        default = default if len(default) <= 40 else default[:37] + "..."
        ann = f.annotation.__name__ if isinstance(f.annotation, type) else str(f.annotation)
        ann = re.sub(r"\b(typing|[a-z_]+(\.[a-z_0-9]+)*)\.(?=[A-Za-z])", "", ann)  # drop module paths
        rows.append(f"| `{name}` | `{cell(ann)}` | `{cell(default)}` | {cell(f.description or '')} |")
    return rows


def steps_markdown() -> str:
    """The reference of every recipe step, generated from the registries (``make docs`` writes it to
    ``docs/recipe-steps.md``; a test checks the committed file is current). YAML keys are the fields.

    >>> "### int8_static" in steps_markdown()
    True
    """
    # torchslim's own steps only: a step a user (or a test) registers is not part of this reference.
    steps = {k: v for k, v in _all_steps().items() if v.config_cls.__module__.startswith("torchslim.")}
    lines = ["# Recipe steps and methods", "",
             "Generated from torchslim's method and step registries by `make docs`; do not edit by hand.",
             "A recipe step is `{type: <name>, <field>: <value>, ...}`; the same names are `torchslim quantize/prune "
             "--method` choices and the config classes are what `quantize()` / `prune()` take.", ""]  # fmt: skip
    by_method = {m.name: m for m in methods()}
    for name in sorted(steps):
        st = steps[name]
        m = by_method.get(name)
        lines += [f"### {name}", "", " ".join((st.description or "").split()), ""]
        facts = [f"config: `{st.config_cls.__name__}`"]
        if m is not None:
            facts.append(f"verb: `{m.verb}()`")
            if m.needs:
                facts.append("needs: " + ", ".join(sorted(m.needs)))
        if st.accepts_targets:
            facts.append("takes `targets`")
        if st.produces:
            facts.append("leaves the model " + ", ".join(sorted(st.produces)))
        if st.forbidden_after:
            facts.append("not after: " + ", ".join(sorted(st.forbidden_after)))
        if st.requires:
            facts.append("needs before it: " + ", ".join(sorted(st.requires)))
        lines += ["; ".join(facts) + ".", ""]
        rows = _field_rows(st.config_cls)
        if rows:
            lines += ["| field | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"
