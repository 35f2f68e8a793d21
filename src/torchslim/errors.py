"""torchslim's exception types.

Every error a user can cause is one of these, raised before any work starts, with the fix in the
message. The CLI prints ``str(error)`` on one line and exits with code 2 (``--debug`` shows the
traceback). Each type also subclasses the builtin a Python user would expect (``ValueError``,
``FileNotFoundError``...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TorchSlimError(Exception):
    """Base class of every error torchslim raises on purpose."""


class ConfigError(TorchSlimError, ValueError):
    """A config, recipe or argument value is wrong (type, range, combination)."""


class UnknownNameError(TorchSlimError, KeyError):
    """A model, method, step type or layer name does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(TorchSlimError, ValueError):
    """Data is missing, corrupt, empty, wrongly shaped or not finite."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set is not where torchslim looked; the message says how to get it."""


class CheckpointError(TorchSlimError, ValueError):
    """A checkpoint is unreadable, truncated, or belongs to another architecture."""


class TargetError(TorchSlimError, ValueError):
    """A target pattern matches no layer, or names a layer that cannot take the method."""


class CompatibilityError(TorchSlimError, ValueError):
    """An operation cannot apply to this model in its current state (e.g. already quantized)."""


class MissingDependencyError(TorchSlimError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


class TrainingError(TorchSlimError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume)."""


class ModelError(TorchSlimError, ValueError):
    """The model itself cannot be used: NaN or infinite weights, say."""


class OutputExistsError(TorchSlimError, FileExistsError):
    """An output path exists and ``force`` was not given."""


class SpeedError(TorchSlimError, RuntimeError):
    """A result is slower than a required speed-up (``--require-speedup``); nothing was written.

    The message gives the measured speed-up, the reasons read from the model's layers and what to change.
    """


class BudgetError(TorchSlimError, ValueError):
    """No candidate meets the accuracy budget; the message names the closest one and its drop."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the closest ``choices`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def require(module: str, extra: str) -> object:
    """Import an optional dependency lazily or raise :class:`MissingDependencyError`.

    >>> require("json", "dev").__name__
    'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'torchslim[{extra}]'"
        ) from exc
