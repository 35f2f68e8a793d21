"""The one targeting rule every verb uses to decide which layers a method touches.

``targets`` maps patterns to a value (a config, a ratio, ...) or ``None`` (leave the layer alone).
For each candidate module the most specific pattern wins:

1. an exact module name (``"features.0"``),
2. a regular expression over the module name, written ``"re:<regex>"`` (full match; the longest
   pattern wins when several match),
3. a module type name (``"Linear"``, ``"Conv2d"``),
4. the verb's ``default`` (applied to modules of the verb's supported types).

A pattern that matches no module is an error, never a silent no-op.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import torch.nn as nn

from torchslim.errors import TargetError, suggest

T = TypeVar("T")


def resolve_targets(
    model: nn.Module,
    targets: Mapping[str, T | None] | None,
    *,
    default: T | None,
    types: Iterable[type[nn.Module]],
) -> dict[str, T]:
    """Return ``{module_name: value}`` for every module the method should touch.

    Candidates are the modules whose type is in ``types``; exact names may also name other
    modules (the verb then reports whether it can handle them).

    >>> import torch.nn as nn
    >>> m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    >>> resolve_targets(m, {"2": None}, default="int8", types=[nn.Linear])
    {'0': 'int8'}
    >>> resolve_targets(m, {"re:[02]": "int4"}, default=None, types=[nn.Linear])
    {'0': 'int4', '2': 'int4'}
    """
    types = tuple(types)
    modules = dict(model.named_modules())
    targets = dict(targets or {})
    exact = {k: v for k, v in targets.items() if not k.startswith("re:") and k in modules}
    regex = {k[3:]: v for k, v in targets.items() if k.startswith("re:")}
    by_type = {k: v for k, v in targets.items() if not k.startswith("re:") and k not in modules}
    type_names = {t.__name__ for _, m in modules.items() for t in type(m).__mro__}
    for k in by_type:
        if k not in type_names:
            raise TargetError(
                f"target {k!r} is neither a module name nor a module type in this model."
                f"{suggest(k, [n for n in modules if n])} Use 're:<regex>' for patterns."
            )
    compiled = {}
    for pat in regex:
        try:
            compiled[pat] = re.compile(pat)
        except re.error as exc:
            raise TargetError(f"target 're:{pat}' is not a valid regular expression: {exc}") from exc
    used: set[str] = set()
    out: dict[str, T] = {}
    for name, m in modules.items():
        if not name:
            continue
        is_candidate = isinstance(m, types)
        value: Any = _MISSING
        if name in exact:
            value = exact[name]
            used.add(name)
        else:
            hits = [p for p, rx in compiled.items() if rx.fullmatch(name)]
            if hits and is_candidate:
                best = max(hits, key=len)
                value = regex[best]
                used.update("re:" + h for h in hits)
            elif is_candidate:
                tnames = [t.__name__ for t in type(m).__mro__ if t.__name__ in by_type]
                if tnames:
                    value = by_type[tnames[0]]
                    used.add(tnames[0])
                else:
                    value = default
        if value is _MISSING or value is None:
            continue
        out[name] = value
    unused = [k for k in targets if k not in used and not (k.startswith("re:") and k in used)]
    if unused:
        raise TargetError(
            f"target pattern(s) {unused} matched no {'/'.join(t.__name__ for t in types)} layer; "
            f"layer names look like {[n for n, m in modules.items() if isinstance(m, types)][:4]}"
        )
    return out


class _Missing:
    pass


_MISSING: Any = _Missing()
