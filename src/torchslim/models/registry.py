"""Model registry: ``@register_model`` + :func:`create_model`, as timm does it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from torchslim.errors import ConfigError, UnknownNameError, suggest


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    family: str
    description: str
    input_shape: tuple[int, ...] | None = (1, 28, 28)  # None: not an image classifier
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, family: str, description: str, input_shape: tuple[int, ...] | None = (1, 28, 28), **defaults: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, fn, family, description, input_shape, dict(defaults))
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the modules runs their @register_model decorators.
    from torchslim.models import lenet, resnet_cifar, torchvision_models  # noqa: F401
    from torchslim.models import transformers as _hf  # noqa: F401


def model_names(family: str | None = None) -> list[str]:
    _ensure_loaded()
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise UnknownNameError(
            f"unknown model {name!r}; `torchslim models` lists the {len(_REGISTRY)} names.{suggest(name, _REGISTRY)}"
        )
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name (random init; nothing is downloaded).

    >>> m = create_model("lenet300")
    >>> sum(p.numel() for p in m.parameters())
    266610
    """
    entry = get_entry(name)
    merged = {**entry.defaults, **kwargs}
    try:
        return entry.factory(**merged)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for model {name!r}: {exc}") from exc
