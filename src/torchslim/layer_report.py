"""The per-layer report every verb returns: what it did to each layer, what it skipped and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerEntry:
    name: str
    layer_type: str
    action: str  # e.g. "int8-static", "pruned", "skipped"
    detail: str = ""  # why skipped / which observer / ...
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    verb: str
    method: str
    layers: list[LayerEntry] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, layer_type: str, action: str, detail: str = "", **kw: Any) -> LayerEntry:
        e = LayerEntry(name, layer_type, action, detail, kw.get("before", {}), kw.get("after", {}))
        self.layers.append(e)
        return e

    @property
    def skipped(self) -> list[LayerEntry]:
        return [e for e in self.layers if e.action == "skipped"]

    def to_dict(self) -> dict[str, Any]:
        return {"verb": self.verb, "method": self.method, "summary": self.summary, "layers": [asdict(e) for e in self.layers]}

    def to_markdown(self) -> str:
        keys = sorted({k for e in self.layers for k in (*e.before, *e.after)})
        head = ["layer", "type", "action", "detail", *[f"{k} before" for k in keys], *[f"{k} after" for k in keys]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for e in self.layers:
            cells = [e.name, e.layer_type, e.action, e.detail, *[_f(e.before.get(k)) for k in keys], *[_f(e.after.get(k)) for k in keys]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        from rich.console import Console
        from rich.table import Table

        keys = sorted({k for e in self.layers for k in (*e.before, *e.after)})
        t = Table(title=f"{self.verb}: {self.method}")
        for c in ["layer", "type", "action", "detail", *[f"{k} before" for k in keys], *[f"{k} after" for k in keys]]:
            t.add_column(c)
        for e in self.layers:
            t.add_row(e.name, e.layer_type, e.action, e.detail, *[_f(e.before.get(k)) for k in keys], *[_f(e.after.get(k)) for k in keys])
        Console().print(t)


def _f(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
