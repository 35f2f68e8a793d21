"""``torchslim report DIR``: re-render report.html / report.md / figures from DIR/report.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="re-render the report of a `torchslim compress` output folder")
    p.add_argument("dir", help="output folder of `torchslim compress`")
    p.set_defaults(func=run)


def check_report(path: Path) -> None:
    """Refuse, before anything is drawn, a ``report.json`` without the shape the renderer reads (a list, or
    stages that are not objects, ended in raw TypeErrors after the figures were already replaced)."""
    import json

    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from torchslim.errors import DataError

    class Layer(BaseModel):
        model_config = ConfigDict(extra="allow")
        name: str
        type: str
        numel: int
        sparsity: float
        bits: float

    class Stage(BaseModel):
        model_config = ConfigDict(extra="allow")
        name: str
        size_bytes: float = Field(ge=0)
        layers: list[Layer] = Field(default_factory=list)

    class Artifact(BaseModel):
        model_config = ConfigDict(extra="allow")
        file: str
        size_bytes: int
        compression_ratio: float
        reload_identical_outputs: bool

    class Report(BaseModel):
        model_config = ConfigDict(extra="allow")
        stages: list[Stage] = Field(min_length=1)
        artifact: Artifact | None = None
        bits_table: list[dict[str, Any]] | None = None
        histograms: dict[str, Any] = Field(default_factory=dict)
        title: str = ""

    if not path.is_file():
        return  # render_report names the missing file
    try:
        Report.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError and ValidationError are ValueErrors
        if isinstance(exc, ValidationError):
            e = exc.errors()[0]
            what = f"field {'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}"
        else:
            what = f"{type(exc).__name__}: {str(exc)[:120]}"
        raise DataError(f"{path} is not a report torchslim wrote ({what}); rerun `torchslim compress` to write it again") from None


def run(args: argparse.Namespace) -> int:
    from torchslim.report import render_report

    check_report(Path(args.dir) / "report.json")
    files = render_report(args.dir)
    print(f"wrote {', '.join(str(Path(args.dir) / f) for f in files)}")
    return 0
