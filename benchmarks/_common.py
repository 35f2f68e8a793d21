"""Shared by every benchmark: fixed threads, result files in benchmarks/results/."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 2


def cpu_info() -> dict[str, Any]:
    """The CPU model and the flags that decide kernel paths (AVX2, AVX-512 VNNI / BF16, AMX)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    kind = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX2 only" if "avx2" in flags else "other"
    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in flags], "cpu_kind": kind}


def setup() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)


def write_results(name: str, rows: list[dict[str, Any]], *, notes: str = "", extra: dict[str, Any] | None = None,
                  columns: list[str] | None = None) -> Path:  # fmt: skip
    """Write ``results/<name>.json`` (``{"rows": [...], ...}``) and a Markdown table beside it."""
    from torchslim.checkpoint import versions

    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": THREADS,
        "machine": platform.processor() or platform.machine(), **cpu_info(), "versions": versions(),
        "command": " ".join(sys.argv), "notes": notes, **(extra or {}), "rows": rows,
    }  # fmt: skip
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    cpu = cpu_info()
    md = [f"# {name}\n", f"CPU: {cpu['cpu_model']} ({cpu['cpu_kind']}; {', '.join(cpu['cpu_flags'])}), {THREADS} threads\n",
          f"{notes}\n" if notes else "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    return path


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
