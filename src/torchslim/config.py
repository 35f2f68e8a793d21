"""The one base of every torchslim config class (pruning, quantization, transformers, export).

Fields are the YAML recipe keys. ``extra="forbid"`` turns a typo into an error, and a pydantic
``ValidationError`` becomes a :class:`~torchslim.errors.ConfigError` that names the class, the
field, what was wrong, what was given and, for an unknown key, the closest field names.
"""

from __future__ import annotations

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
        elif "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}")
    return f"{cls.__name__}: " + "; ".join(parts)


class StrictConfig(BaseModel):
    """Unknown keys are errors; invalid values raise :class:`ConfigError`, not pydantic's error."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, type(self))) from None
