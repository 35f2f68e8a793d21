"""Recipes: YAML (or Python lists) of steps, validated before any work starts.

A recipe is either a list of steps or a mapping with ``steps`` and a few run-wide fields::

    name: prune-then-int8
    dataset: fashion-mnist        # the run's data (any source torchslim.sources takes); steps read it
    steps:
      - {type: deep_compression, share: {bits: 5}}

Each step is ``{type: <method>, ...the fields of that method's config class}``, plus an
optional ``targets`` mapping for methods that take one. The config classes are the ones the
Python API uses and forbid unknown keys, so a typo is an error with the YAML line and column.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from torchslim.errors import ConfigError, suggest
from torchslim.recipes.registry import StepType, get_step, step_types


class RecipeSettings(BaseModel):
    """Run-wide fields of a recipe (everything but ``steps``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "recipe"
    description: str = ""
    dataset: str = "fashion-mnist"
    calibration_samples: int = Field(512, ge=1, description="training images used to calibrate static quantization")
    latency_runs: int = Field(20, ge=1, le=10_000, description="timed runs per batch size when measuring each step")
    metric: str = Field("accuracy", description="what every stage reports: accuracy, fidelity or output_error "
                        "(both against the model the recipe started from)")


@dataclass
class RecipeStep:
    type: str
    config: BaseModel
    spec: StepType
    targets: dict[str, Any] | list[str] | None = None
    where: str = ""  # "recipe.yaml:12:5" for messages

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, **self.config.model_dump(mode="json")}
        if self.targets is not None:
            out["targets"] = self.targets
        return out


@dataclass
class Recipe:
    settings: RecipeSettings
    steps: list[RecipeStep]
    source: str = "<recipe>"

    def to_dict(self) -> dict[str, Any]:
        return {**self.settings.model_dump(mode="json"), "steps": [s.to_dict() for s in self.steps]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# ----------------------------------------------------------------------------- positions
class _Marks:
    """Line/column of every key and value in the YAML, by path (("steps", 0, "epochs"), ...)."""

    def __init__(self, text: str | None, source: str) -> None:
        self.source = source
        self.marks: dict[tuple[Any, ...], tuple[int, int]] = {}
        if text is not None:
            try:
                node = yaml.compose(text, Loader=RecipeLoader)
            except yaml.YAMLError:
                node = None
            if node is not None:
                self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                self.marks[(*path, key, "<value>")] = (v.start_mark.line + 1, v.start_mark.column + 1)
                if isinstance(v, yaml.ScalarNode):
                    self.marks[(*path, key)] = (k.start_mark.line + 1, k.start_mark.column + 1)
                else:
                    self._walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, (*path, i))

    def at(self, path: Sequence[Any]) -> str:
        path = tuple(path)
        while path and path not in self.marks:
            path = path[:-1]
        if path in self.marks:
            line, col = self.marks[path]
            return f"{self.source}:{line}:{col}"
        return self.source


# ----------------------------------------------------------------------------- parsing
MAX_DEPTH = 32  # recipes nest a few levels; a deeper document is a mistake or an attack
MAX_RECIPE_BYTES = 1 << 20


class RecipeLoader(yaml.SafeLoader):
    """``SafeLoader`` without anchors/aliases (a few hundred bytes of aliases expand to gigabytes),
    with a nesting limit (deep nesting exhausts Python's stack) and duplicate keys refused (the
    last value would win silently)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (*name) are not allowed in recipes; "
                                              "write the values out", mark)  # fmt: skip
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(None, None, f"keys must be text, got {key!r}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str = "<recipe>") -> Any:
    """Safe YAML (see :class:`RecipeLoader`) with errors as :class:`ConfigError` naming the line and column.

    >>> parse_yaml("a: &x [1]\\nb: *x")
    Traceback (most recent call last):
    ...
    torchslim.errors.ConfigError: <recipe>:2:4: recipe is not valid YAML: anchors and aliases (*name) are not allowed in recipes; write the values out
    """
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{source}: a recipe of {len(text):,} characters is too large (limit {MAX_RECIPE_BYTES:,})")
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: recipe is not valid YAML: {problem}") from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{source}: recipe is not valid YAML: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # too long or NUL bytes for a path: it is YAML text
        return False


def read_recipe_source(recipe: str | Path | Mapping[str, Any] | Sequence[Any]) -> tuple[Any, str | None, str]:
    """(raw data, YAML text or None, source name) of a path, a YAML string, or Python data.

    A string is a path if it names an existing file or ends in .yaml/.yml; otherwise YAML text.
    """
    if isinstance(recipe, Path) or (isinstance(recipe, str) and (recipe.endswith((".yaml", ".yml")) or "\n" not in recipe and _is_file(recipe))):  # fmt: skip
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        raw = path.read_bytes()
        if len(raw) > MAX_RECIPE_BYTES:
            raise ConfigError(f"{path}: a recipe of {len(raw):,} bytes is too large (limit {MAX_RECIPE_BYTES:,})")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from exc
        return parse_yaml(text, str(path)), text, str(path)
    if isinstance(recipe, str):
        return parse_yaml(recipe), recipe, "<recipe>"
    return copy.deepcopy(recipe), None, "<recipe>"


# ----------------------------------------------------------------------------- overrides
def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside ``X``, ``X | None`` or ``Optional[X]``, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for a in typing.get_args(annotation):
            t = _model_type(a)
            if t is not None:
                return t
    return None


def _set_everywhere(cls: type[BaseModel], data: dict[str, Any], field: str, value: Any) -> bool:
    """Set ``field`` in ``data`` and in every nested config (present or defaulted) that has it."""
    hit = False
    if field in cls.model_fields:
        data[field] = value
        hit = True
    for name, f in cls.model_fields.items():
        sub = _model_type(f.annotation)
        if sub is None or name == field:
            continue
        if isinstance(data.get(name), dict):
            hit |= _set_everywhere(sub, data[name], field, value)
        elif name not in data and not f.is_required():
            default = f.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                nested = default.model_dump()
                if _set_everywhere(sub, nested, field, value):
                    data[name] = nested
                    hit = True
    return hit


def apply_overrides(raw: Any, overrides: Iterable[str], source: str = "<recipe>") -> dict[str, Any]:
    """Apply ``--set`` strings to raw recipe data; returns the mapping form.

    ``KEY=VALUE`` sets a run-wide field (``dataset=digits``); ``STEP.FIELD[.SUB]=VALUE`` sets a
    step field, STEP being the step's number (1-based), its type (if unique) or ``*`` (every
    step, and every nested config, that has the field: ``*.max_steps=5``). Values are YAML.

    >>> apply_overrides([{"type": "finetune"}], ["finetune.epochs=2", "dataset=digits"])["steps"]
    [{'type': 'finetune', 'epochs': 2}]
    """
    data = _as_mapping(raw, source)
    steps = data["steps"]
    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set finetune.epochs=2")
        value = parse_yaml(text, f"--set {key}")
        parts = key.strip().split(".")
        if len(parts) == 1:
            if parts[0] not in RecipeSettings.model_fields:
                raise ConfigError(
                    f"--set {key}: no run-wide field {parts[0]!r}.{suggest(parts[0], RecipeSettings.model_fields)} "
                    f"Step fields are set as STEP.FIELD (e.g. finetune.epochs=2)"
                )
            data[parts[0]] = value
            continue
        sel, path = parts[0], parts[1:]
        if sel == "*":
            if len(path) != 1:
                raise ConfigError(f"--set {key}: '*' takes one field name (e.g. *.max_steps=5)")
            hits = 0
            for s in steps:
                if isinstance(s, dict) and "type" in s:
                    hits += _set_everywhere(get_step(str(s["type"])).config_cls, s, path[0], value)
            if not hits:
                raise ConfigError(f"--set {key}: no step of this recipe has a field {path[0]!r}")
            continue
        target = _select_step(steps, sel, key)
        node = target
        for p in path[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a nested config")
            node = nxt
        node[path[-1]] = value
    return data


def _select_step(steps: list[Any], sel: str, key: str) -> dict[str, Any]:
    if sel.isdigit():
        i = int(sel)
        if not 1 <= i <= len(steps):
            raise ConfigError(f"--set {key}: the recipe has steps 1..{len(steps)}, not {i}")
        return steps[i - 1]
    matches = [s for s in steps if isinstance(s, dict) and s.get("type") == sel]
    if not matches:
        types_here = [str(s.get("type")) for s in steps if isinstance(s, dict)]
        raise ConfigError(f"--set {key}: the recipe has no {sel!r} step.{suggest(sel, types_here)} Steps: {types_here}")
    if len(matches) > 1:
        raise ConfigError(f"--set {key}: the recipe has {len(matches)} {sel!r} steps; name one by number (e.g. 2.{key.split('.', 1)[1]})")
    return matches[0]


def _as_mapping(raw: Any, source: str) -> dict[str, Any]:
    if raw is None:
        raise ConfigError(f"{source}: the recipe is empty; give a list of steps")
    if isinstance(raw, list):
        return {"steps": raw}
    if isinstance(raw, dict):
        if "steps" not in raw:
            raise ConfigError(f"{source}: a recipe mapping needs a 'steps' list (keys found: {sorted(raw)})")
        return dict(raw)
    raise ConfigError(f"{source}: a recipe is a list of steps or a mapping with 'steps', not {type(raw).__name__}")


# ----------------------------------------------------------------------------- validation
def _format_validation(exc: ValidationError, cls: type[BaseModel], marks: _Marks, base: tuple[Any, ...],
                       what: str) -> str:  # fmt: skip
    msgs = []
    for err in exc.errors()[:3]:
        loc = tuple(x for x in err["loc"])
        # A bad value points at the value; an unknown key at the key.
        where = marks.at((*base, *loc) if err["type"] == "extra_forbidden" else (*base, *loc, "<value>"))
        field = ".".join(str(x) for x in loc) or "(config)"
        if err["type"] == "extra_forbidden":
            known = _fields_at(cls, loc[:-1])
            msgs.append(f"{where}: {what}: unknown field {field!r}.{suggest(str(loc[-1]), known)} Fields: {', '.join(known)}")
        else:
            got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
            msgs.append(f"{where}: {what}: field {field!r}: {err['msg']}{got}")
    more = f" (and {len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return "; ".join(msgs) + more


def _fields_at(cls: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    for p in loc:
        f = cls.model_fields.get(str(p))
        sub = _model_type(f.annotation) if f is not None else None
        if sub is None:
            return []
        cls = sub
    return list(cls.model_fields)


def build_recipe(data: dict[str, Any], text: str | None = None, source: str = "<recipe>") -> Recipe:
    """Validate mapping-form recipe data into a :class:`Recipe` (every step's config built)."""
    marks = _Marks(text, source)
    settings_raw = {k: v for k, v in data.items() if k != "steps"}
    try:
        settings = RecipeSettings(**settings_raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, RecipeSettings, marks, (), "recipe")) from exc
    steps_raw = data["steps"]
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ConfigError(f"{marks.at(('steps',))}: 'steps' must be a non-empty list of {{type: ..., ...}} mappings")
    # A bare-list recipe has no "steps" key in the YAML: positions start at the list itself.
    base0: tuple[Any, ...] = ("steps",) if ("steps",) in marks.marks else ()
    steps = []
    for i, raw in enumerate(steps_raw):
        base = (*base0, i)
        where = marks.at(base)
        if not isinstance(raw, dict) or "type" not in raw:
            raise ConfigError(f"{where}: step {i + 1} must be a mapping with a 'type' key (got {raw!r})")
        fields = dict(raw)
        type_name = str(fields.pop("type"))
        try:
            spec = get_step(type_name)
        except KeyError as exc:
            raise ConfigError(f"{marks.at((*base, 'type', '<value>'))}: step {i + 1}: {exc}") from exc
        targets = fields.pop("targets", None)
        if targets is not None:
            if not spec.accepts_targets:
                raise ConfigError(f"{marks.at((*base, 'targets'))}: step {i + 1} ({spec.type}) takes no 'targets'")
            if not isinstance(targets, dict | list) or not all(isinstance(k, str) for k in targets):
                raise ConfigError(
                    f"{marks.at((*base, 'targets'))}: step {i + 1}: 'targets' is a list of layer patterns or a "
                    "mapping from layer patterns to values"
                )
        try:
            config = spec.config_cls(**fields)
        except (ValidationError, ConfigError) as exc:
            # StrictConfig raises ConfigError from pydantic's error, whose locations point into the file.
            verr = exc if isinstance(exc, ValidationError) else exc.__cause__
            if not isinstance(verr, ValidationError):
                raise ConfigError(f"{where}: step {i + 1} ({spec.type}): {exc}") from exc
            raise ConfigError(_format_validation(verr, spec.config_cls, marks, base, f"step {i + 1} ({spec.type})")) from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: step {i + 1} ({spec.type}): {exc}") from exc
        steps.append(RecipeStep(spec.type, config, spec, targets, where))
    recipe = Recipe(settings, steps, source)
    check_order(recipe)
    return recipe


def check_order(recipe: Recipe) -> None:
    """Refuse steps that cannot follow what came before (e.g. pruning after INT8 conversion)."""
    state: dict[str, int] = {}  # state -> step number that produced it
    for i, step in enumerate(recipe.steps, 1):
        for st, why in step.spec.forbidden_after.items():
            if st in state:
                j = state[st]
                raise ConfigError(
                    f"{step.where}: step {i} ({step.type}) cannot follow step {j} ({recipe.steps[j - 1].type}): {why}; "
                    f"move it before step {j}"
                )
        for st, what in step.spec.requires.items():
            if st not in state:
                raise ConfigError(f"{step.where}: step {i} ({step.type}) needs {what} earlier in the recipe")
        for st in step.spec.produces:
            state.setdefault(st, i)


def load_recipe(
    recipe: str | Path | Mapping[str, Any] | Sequence[Any] | Recipe, overrides: Iterable[str] = ()
) -> Recipe:
    """Parse, override (``--set`` strings) and validate a recipe: a path, YAML text or Python data.

    >>> r = load_recipe([{"type": "finetune", "epochs": 1}], ["dataset=digits"])
    >>> r.steps[0].config.epochs, r.settings.dataset, r.steps[0].config.dataset is None
    (1, 'digits', True)
    """
    if isinstance(recipe, Recipe):
        if overrides:
            return load_recipe(recipe.to_dict(), overrides)
        return recipe
    raw, text, source = read_recipe_source(recipe)
    overrides = list(overrides)
    data = apply_overrides(raw, overrides, source) if overrides else _as_mapping(raw, source)
    return build_recipe(data, text, source)


def describe_steps() -> list[tuple[str, str]]:
    """(type, one-line description) of every registered step."""
    return [(t, get_step(t).description) for t in step_types()]
