"""The one base of every torchslim config class (pruning, quantization, transformers, export).

Fields are the YAML recipe keys. ``extra="forbid"`` turns a typo into an error, and a pydantic
``ValidationError`` becomes a :class:`~torchslim.errors.ConfigError` that names the class, the
field, what was wrong, what was given and, for an unknown key, the closest field names.
"""

from __future__ import annotations

import contextvars
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from torchslim.errors import ConfigError, suggest


def describe_validation_error(exc: ValidationError, cls: type[BaseModel]) -> str:
    """One line per field: ``Cls: field: message (got value)``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; {cls.__name__} takes {sorted(cls.model_fields)}.{suggest(str(err['loc'][-1]), cls.model_fields)}"
        elif err["type"] == "missing":
            key = str(err["loc"][-1])
            msg = f"required, and not given: set it ({key}=... in Python, '{key}:' in a recipe step, or the command's option for it)"
        elif "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}")
    return f"{cls.__name__}: " + "; ".join(parts)


_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("torchslim_config_depth", default=0)


class StrictConfig(BaseModel):
    """Unknown keys are errors; invalid values raise :class:`ConfigError`, not pydantic's error."""

    # NaN or infinity in a number field (a learning rate, a sparsity) is always a mistake.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        # A config nested in another is built inside the outer one's validation: there pydantic's
        # own error must pass through, so the outer error keeps the full field path.
        token = _DEPTH.set(_DEPTH.get() + 1)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if _DEPTH.get() > 1:
                raise
            raise ConfigError(describe_validation_error(exc, type(self))) from exc  # recipes read the locations
        finally:
            _DEPTH.reset(token)
