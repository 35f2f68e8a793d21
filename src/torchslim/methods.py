"""The one method registry: a config class names its verb, handler, recipe step and data needs.

Each method registers next to its config and handler, by an explicit call in its package's
``__init__`` (``register_method(StaticInt8Config, verb="quantize", handler=...)``). From that one
entry, ``quantize`` / ``prune`` dispatch on ``type(config)``, recipes get a step of the same name
(with the entry's ordering rule), the CLI lists the name under ``--method``, and the entry's
``codecs`` function teaches the checkpoint the method's module types.

An entry may also say which layers the method can take: ``applies(model, name, module, example)``
returns ``None`` when the method can take the layer and otherwise the one-line reason it cannot
(naming the op and why), and ``applies_detail`` (same arguments) says what the method makes of a
layer it takes and what that runs on. ``torchslim.inspect`` asks every entry that has one about
every layer; ``example`` is one sample of the model's input (a ``ModelInput``) or ``None``.
Predicates that need a whole-model fact (a torch.fx trace, the channel groups) get it through
:func:`model_fact`, which inside :func:`shared_facts` computes each fact once per model.

This module is a primitive: it imports only :mod:`torchslim.errors` and
:mod:`torchslim.layer_report`, so every layer may read it and nothing here imports upward.

>>> class NoopConfig:
...     method = "noop_example"
>>> entry = register_method(NoopConfig, verb="quantize", handler=lambda m, c, call: (m, call.report))
>>> method_named("noop-example").config_cls.__name__
'NoopConfig'
>>> unregister_method(NoopConfig)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from torchslim.errors import ConfigError, UnknownNameError, suggest
from torchslim.layer_report import Report

# Model states a step can leave behind (recipe ordering: ``produces`` / ``forbidden_after``).
QUANTIZED = "quantized"  # converted to integer / low-precision kernels: no more float training or pruning
SHARED = "shared"  # weights are codebook indices (weight sharing)
CODED = "coded"  # Huffman-coded storage: final form
SPARSE = "sparse"  # unstructured zeros (informational)
STRUCTURED = "structured"  # channels removed (informational)

# What a method needs besides the model: the verb refuses the call before any work without it.
CALIBRATION = "calibration"  # calib_data: representative inputs
TRAINING = "training"  # train_data and val_data: the method trains
_NEEDS = frozenset({CALIBRATION, TRAINING})

# The usual rule for a method that changes float weights: nothing after integer/shared/coded layers.
ON_FLOAT_WEIGHTS: Mapping[str, str] = {
    QUANTIZED: "its weights are already integers; quantize last",
    SHARED: "weight-shared layers hold codebook indices, not float weights",
    CODED: "Huffman-coded layers are the final storage form",
}

# Checkpoint codec kinds -> the package whose import registers them (through its methods'
# ``codecs`` or its module definitions). torchslim.checkpoint sits below the method packages, so
# it never imports them itself: when a file names a kind not registered yet, it calls
# :func:`load_codec_home`, which imports exactly the package listed here (one explicit, named
# import, not "import everything"). tests/test_methods_registry.py checks this table against
# the kinds the packages really register.
CODEC_HOMES: Mapping[str, str] = {
    **dict.fromkeys(
        ("int8_dynamic_linear", "weight_only_linear", "seed_dynamic_linear", "qconv2d", "qlinear", "identity", "cast",
         "int8_needs_vnni", "smoothed_linear"),
        "torchslim.quantization",
    ),
    **dict.fromkeys(
        ("conv1d", "conv3d", "batchnorm1d", "batchnorm3d", "groupnorm", "conv_transpose1d", "conv_transpose2d",
         "instancenorm1d", "instancenorm2d", "lstm", "gru", "rnn", "multihead_attention", "prelu", "embedding",
         "tv_layernorm2d"),
        "torchslim.pruning",
    ),  # fmt: skip
    **dict.fromkeys(("shared-linear", "shared-conv2d", "coded-linear", "coded-conv2d"), "torchslim.compression"),
}


def load_codec_home(kind: str) -> bool:
    """Import the package that registers checkpoint codec ``kind``; False when no package does."""
    import importlib

    home = CODEC_HOMES.get(kind)
    if home is None:
        return False
    importlib.import_module(home)
    return True


@dataclass(frozen=True)
class MethodCall:
    """What a verb hands a method's handler besides the model and the config.

    ``calib_data`` is as the verb prepared it (``quantize``: checked calibration batches);
    ``report`` is the verb's report to fill, if it made one.
    """

    targets: Any = None
    calib_data: Any = None
    train_data: Any = None
    val_data: Any = None
    teacher: Any = None
    quiet: bool = True
    report: Report | None = None


# handler(model, config, call) -> (new_model, report); it never modifies ``model``.
Handler = Callable[[Any, Any, MethodCall], "tuple[Any, Report]"]
# applies(model, layer_name, layer, example) -> None (the method can take the layer) or why not, in one line.
Applies = Callable[[Any, str, Any, Any], "str | None"]
# applies_detail(model, layer_name, layer, example) -> what the method makes of a layer it takes, where that runs.
AppliesDetail = Callable[[Any, str, Any, Any], str]


@dataclass(frozen=True, eq=False)
class Method:
    """One registered method: ``name`` is its recipe step type and its CLI ``--method`` choice."""

    name: str
    verb: str
    config_cls: type
    handler: Handler
    description: str = ""
    produces: frozenset[str] = frozenset()
    forbidden_after: Mapping[str, str] = field(default_factory=dict)  # state -> why
    needs: frozenset[str] = frozenset()
    accepts_targets: bool = True
    codecs: Callable[[], None] | None = None
    applies: Applies | None = None
    applies_detail: AppliesDetail | None = None


_METHODS: dict[type, Method] = {}
_CODECS_DONE: set[Callable[[], None]] = set()
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_method(
    config_cls: type,
    *,
    verb: str,
    handler: Handler,
    name: str | None = None,
    description: str = "",
    produces: Iterable[str] = (),
    forbidden_after: Mapping[str, str] | None = None,
    needs: Iterable[str] = (),
    accepts_targets: bool = True,
    codecs: Callable[[], None] | None = None,
    applies: Applies | None = None,
    applies_detail: AppliesDetail | None = None,
) -> Method:
    """Register ``config_cls`` as a method of ``verb`` (replacing an earlier entry for the same class).

    ``name`` defaults to the class's ``method`` attribute; it is the recipe step type and the CLI
    choice, in snake case. ``needs`` holds :data:`CALIBRATION` and/or :data:`TRAINING`.
    ``codecs()`` registers the method's checkpoint codecs; it runs here, once. ``applies`` and
    ``applies_detail`` say which layers the method can take (see the module docstring).
    """
    name = name or getattr(config_cls, "method", None) or ""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{config_cls.__name__}: method name {name!r} must be snake_case (e.g. 'int8_static')")
    bad = set(needs) - _NEEDS
    if bad:
        raise ConfigError(f"{config_cls.__name__}: unknown needs {sorted(bad)}; use {sorted(_NEEDS)}")
    if applies_detail is not None and applies is None:
        raise ConfigError(f"{config_cls.__name__}: applies_detail describes layers the method takes; give applies= too")
    clash = next((m for m in _METHODS.values() if m.name == name and m.config_cls is not config_cls), None)
    if clash is not None:
        raise ConfigError(f"method name {name!r} is taken by {clash.config_cls.__name__}; choose another for {config_cls.__name__}")
    doc = description or (config_cls.__doc__ or "").strip().split("\n")[0]
    entry = Method(name, verb, config_cls, handler, doc, frozenset(produces), dict(forbidden_after or {}),
                   frozenset(needs), accepts_targets, codecs, applies, applies_detail)  # fmt: skip
    _METHODS[config_cls] = entry
    if codecs is not None and codecs not in _CODECS_DONE:
        codecs()
        _CODECS_DONE.add(codecs)
    return entry


def unregister_method(config_cls: type) -> None:
    """Remove ``config_cls``'s entry (tests register temporary methods)."""
    _METHODS.pop(config_cls, None)


def methods(verb: str | None = None) -> list[Method]:
    """Every registered method (of ``verb``), in registration order."""
    return [m for m in _METHODS.values() if verb is None or m.verb == verb]


def method_for(config: Any, verb: str) -> Method:
    """The entry ``verb`` dispatches ``config`` to (exact type), or a :class:`ConfigError` naming the choices."""
    entry = _METHODS.get(type(config))
    if entry is not None and entry.verb == verb:
        return entry
    names = ", ".join(m.config_cls.__name__ for m in methods(verb))
    other = f" ({type(config).__name__} is a method of {entry.verb}())" if entry is not None else ""
    raise ConfigError(f"{verb}() needs one of the config classes {names}; got {type(config).__name__}{other}")


def method_named(name: str, verb: str | None = None) -> Method:
    """The entry called ``name`` (``int8-static`` is read as ``int8_static``), with a did-you-mean error.

    >>> try:
    ...     method_named("int8_statik")
    ... except UnknownNameError as e:
    ...     print(type(e).__name__)
    UnknownNameError
    """
    key = name.replace("-", "_")
    for m in methods(verb):
        if m.name == key:
            return m
    known = [m.name for m in methods(verb)]
    what = {"quantize": "quantization method", "prune": "pruning method"}.get(verb or "", f"{verb} method" if verb else "method")
    raise UnknownNameError(f"unknown {what} {name!r}.{suggest(key, known)} Known {what}s: {', '.join(known) or 'none registered'}")


def one_line(text: Any, limit: int = 240) -> str:
    """``text``'s first line, whitespace collapsed, at most ``limit`` characters: the form of an
    ``applies`` reason (and of an exception quoted in one).

    >>> one_line("shape '[1, 32]' is invalid\\n  for input of size 383")
    "shape '[1, 32]' is invalid"
    """
    first = " ".join((str(text).strip().splitlines() or [""])[0].split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


def layer_label(module: Any, name: str = "") -> str:
    """How an ``applies`` reason names a layer: its type (and ``name``), and for a module that also
    holds layers (a model with a bare ``class_token``, say) the parameters of its own the row is about.

    >>> import torch.nn as nn
    >>> layer_label(nn.Linear(2, 2)), layer_label(nn.MultiheadAttention(4, 2), "attn")
    ('Linear', 'MultiheadAttention attn (its own in_proj_weight, in_proj_bias)')
    """
    t = f"{type(module).__name__} {name}" if name else type(module).__name__
    if not any(True for _ in module.children()):
        return t
    own = [n for n, _ in module.named_parameters(recurse=False)]
    return f"{t} (its own {', '.join(own[:3])}{', ...' if len(own) > 3 else ''})" if own else t


def method_names(verb: str | None = None) -> list[str]:
    """The names of the registered methods (of ``verb``), in registration order."""
    return [m.name for m in methods(verb)]


# ----------------------------------------------------------------------------- whole-model facts
_FACTS: ContextVar[dict[tuple[int, Any], tuple[Any, Any]] | None] = ContextVar("torchslim_model_facts", default=None)


@contextmanager
def shared_facts() -> Iterator[None]:
    """Inside the block, :func:`model_fact` computes each fact of a model once (an inspection asks
    every method about every layer, and they share the model's trace and channel groups); nested
    blocks share the outer one's facts. The facts are dropped when the outermost block ends.

    >>> calls = []
    >>> with shared_facts():
    ...     a = model_fact(calls, "n", lambda: calls.append(1) or len(calls))
    ...     b = model_fact(calls, "n", lambda: calls.append(1) or len(calls))
    >>> a, b, len(calls)
    (1, 1, 1)
    """
    if _FACTS.get() is not None:
        yield
        return
    token = _FACTS.set({})
    try:
        yield
    finally:
        _FACTS.reset(token)


def model_fact(model: Any, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``, once per ``(model, key)`` inside :func:`shared_facts` (every call outside it).

    A fact that can fail should return its failure (the reason) rather than raise, so that it is
    decided once too.
    """
    cache = _FACTS.get()
    if cache is None:
        return compute()
    k = (id(model), key)
    hit = cache.get(k)
    if hit is None or hit[0] is not model:  # the model is kept alive with its facts, so ids are not reused
        hit = (model, compute())
        cache[k] = hit
    return hit[1]
