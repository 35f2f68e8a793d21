"""``torchslim report DIR``: re-render report.html / report.md / figures from DIR/report.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="re-render the report of a `torchslim compress` output folder")
    p.add_argument("dir", help="output folder of `torchslim compress`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torchslim.report import render_report

    files = render_report(args.dir)
    print(f"wrote {', '.join(str(Path(args.dir) / f) for f in files)}")
    return 0
