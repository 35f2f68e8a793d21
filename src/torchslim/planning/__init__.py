"""Planning: what a model allows (``inspect``), how much each layer can take (``sensitivity``),
and the best mix of pruning and quantization under an accuracy budget (``plan``).

This package sits above the recipes (a plan is a recipe it writes and runs) and below the CLI.
Its functions import lazily, so importing the package stays cheap.

>>> import torchslim.planning.inspect as _  # the module named after its function...
>>> from torchslim.planning import inspect
>>> inspect.__name__, callable(inspect)  # ...does not hide the function
('inspect', True)
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY = {
    "inspect": "torchslim.planning.inspect",
    "Inspection": "torchslim.planning.inspect",
    "LayerInfo": "torchslim.planning.inspect",
    "plan": "torchslim.planning.planner",
    "PlanResult": "torchslim.planning.planner",
    "Choice": "torchslim.planning.space",
    "make_space": "torchslim.planning.space",
    "Sensitivity": "torchslim.planning.sensitivity",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'torchslim.planning' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Importing ``torchslim.planning.inspect`` (the module) makes Python set the package attribute
    ``inspect`` to that module, which would hide the function of the same name depending on import
    order; the package keeps resolving such names through ``_LAZY`` instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and _LAZY[name] == value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
