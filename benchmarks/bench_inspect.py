"""``make bench-inspect``: ``torchslim.inspect`` on every model of the zoo benchmark (issue 20).

Bar: zero crashes, and every "cannot" line names the op and the reason.

The models and their data are bench_zoo.py's (imported, not copied): torchvision resnet50,
mobilenet_v3_small, efficientnet_b0, a small ViT and swin_t at 64x64 (random weights, BatchNorm
statistics re-estimated on real Fashion-MNIST images), a Conv1d + GRU sequence model, a model
taking a dict, all-MiniLM-L6-v2 (a Hugging Face folder, offline) and a small CNN trained on an
ImageFolder tree. Each is inspected with its calibration batches as ``data`` (the example input is
their first sample). A crash is any exception out of ``inspect``. A "cannot" line names the op when
its reason names the layer's type (or a base class of it), the layer or its attribute name, and
gives a reason when at least three more words follow; every line is also checked to be one line.

Writes ``benchmarks/results/inspect.json`` (``rows``: one per model) and ``inspect.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import torch.nn as nn

import bench_zoo as zoo
from _common import setup, write_results

COLUMNS = ["model", "method", "layers", "crashes", "cannot_lines", "cannot_lines_naming_op_and_reason", "check_errors",
           "params", "macs", "best_size_ratio", "best_macs_ratio", "groups", "groups_pruned", "wall_s", "error"]  # fmt: skip
NOTES = (
    "torchslim.inspect(model, data) on each zoo model (bench_zoo.py's builders and calibration batches: 4 batches of 8, "
    f"CNNs / ViT / Swin at {zoo.RES}x{zoo.RES}, MiniLM at max_length 32); the example input is the data's first sample. "
    "crashes: exceptions out of inspect. cannot_lines: (layer, method) pairs a method cannot take, each with a one-line "
    "reason; naming_op_and_reason: the reason names the layer's type (or a base class), the layer or its attribute name "
    "and has at least three more words. best_size_ratio: float bytes / bytes with every layer in the smallest form a "
    "method that applies stores (int4 weight-only, int8, folded BatchNorm). best_macs_ratio: MACs before / after "
    "structured pruning of a copy, each channel group losing 50% of its channels (one per slice where that would "
    "empty a coupled layer; groups whose removal breaks the forward or changes the model's output shapes kept whole). "
    "wall_s: the inspect call alone."
)


def _op_names(module: nn.Module, name: str) -> list[str]:
    types = [t.__name__ for t in type(module).__mro__ if t not in (nn.Module, object)]
    return [*types, *([name, name.rsplit(".", 1)[-1]] if name else [])]


def names_op_and_reason(reason: str, module: nn.Module, name: str) -> bool:
    """Whether ``reason`` names the op (the layer's type or a base of it, the layer, its attribute)
    and says why (at least three more words), on one line."""
    if "\n" in reason:
        return False
    named = [op for op in _op_names(module, name) if re.search(rf"(?<![\w.]){re.escape(op)}", reason)]
    if not named:
        return False
    rest = reason
    for op in named:
        rest = rest.replace(op, " ")
    return len(re.findall(r"[A-Za-z]{2,}", rest)) >= 3


def inspect_model(name: str, tmp: Path) -> dict[str, Any]:
    import torchslim

    row: dict[str, Any] = {"model": name, "method": "inspect", "crashes": 0}
    t0 = time.perf_counter()
    spec = zoo.build(name, tmp)
    row["build_s"] = round(time.perf_counter() - t0, 1)
    zoo.log(f"{name}: built in {row['build_s']}s")
    t0 = time.perf_counter()
    try:
        info = torchslim.inspect(spec.model, zoo.ListLoader(spec.calib))
    except Exception as exc:  # noqa: BLE001 - a crash is what this benchmark counts
        row.update(crashes=1, error=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}",
                   traceback_tail="".join(traceback.format_exception(exc)[-6:])[-2000:])  # fmt: skip
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        return row
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    mods = dict(spec.model.named_modules())
    lines, bad = 0, []
    by_method: Counter[str] = Counter()
    samples: dict[tuple[str, str], str] = {}
    for r in info.rows:
        for method, why in r.cannot.items():
            lines += 1
            by_method[method] += 1
            samples.setdefault((method, r.type), f"{r.name or '(model)'} ({r.type}) cannot {method}: {why}")
            if not names_op_and_reason(why, mods[r.name], r.name):
                bad.append(f"{r.name or '(model)'} ({r.type}) cannot {method}: {why}")
    s = info.summary
    bm = s["best_macs"]
    row.update(
        layers=len(info.rows), cannot_lines=lines, cannot_lines_naming_op_and_reason=lines - len(bad),
        check_errors=len(s["check_errors"]), params=s["params"], macs=s["macs"],
        best_size_ratio=s["best_size"]["ratio"], best_size_bytes=s["best_size"]["bytes"], float_bytes=s["float_bytes"],
        best_macs_ratio=bm.get("ratio"), macs_after=bm.get("macs_after"), groups=bm.get("groups"),
        groups_pruned=bm.get("groups_pruned"), best_macs_unknown=bm.get("unknown"),
        applies={m: v["layers"] for m, v in s["methods"].items()}, cannot_by_method=dict(by_method),
        allows=s["allows"], example=s["example"], lines_not_naming_op_or_reason=bad[:20],
        sample_cannot_lines=list(samples.values()), check_error_lines=s["check_errors"][:10],
    )  # fmt: skip
    zoo.log(f"{name}: {len(info.rows)} layers, {lines} cannot lines ({len(bad)} not naming op and reason), "
            f"size {row['best_size_ratio']}x, MACs {row['best_macs_ratio']}x, {row['wall_s']} s")  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(zoo.MODELS), help=f"comma-separated subset of {zoo.MODELS}")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in zoo.MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {zoo.MODELS}")
    setup()
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for name in models:
        with tempfile.TemporaryDirectory(prefix=f"inspect_{name}_") as d:
            rows.append(inspect_model(name, Path(d)))
    summary = {
        "models": len(rows), "layers": sum(r.get("layers", 0) for r in rows), "crashes": sum(r["crashes"] for r in rows),
        "cannot_lines": sum(r.get("cannot_lines", 0) for r in rows),
        "cannot_lines_naming_op_and_reason": sum(r.get("cannot_lines_naming_op_and_reason", 0) for r in rows),
        "check_errors": sum(r.get("check_errors", 0) for r in rows),
    }  # fmt: skip
    summary["bar_met"] = summary["crashes"] == 0 and summary["cannot_lines"] == summary["cannot_lines_naming_op_and_reason"]
    # wall_s is only comparable on a quiet CPU: the load averages say whether other jobs shared it
    load = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()}
    write_results("inspect", rows, notes=NOTES, columns=COLUMNS,
                  extra={"summary": summary, "load_average": load, "src_state": zoo.src_state(), "resolution": zoo.RES})  # fmt: skip
    md = zoo.RESULTS / "inspect.md"
    md.write_text(md.read_text() + "\n## Summary\n\n" + "\n".join(f"- {k}: {v}" for k, v in summary.items()) + "\n")
    print(summary)
    return 0 if summary["bar_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
