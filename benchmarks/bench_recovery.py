"""Recovery benchmark (issue 5): fine-tuning after pruning, with and without distillation, and DDP.

Rows (`model, method, accuracy, baseline_accuracy, wall_s, processes`):
* LeNet-5 pruned to 90% (global magnitude), accuracy right after pruning, then recovered with and
  without distillation for the same epochs: the distillation gain.
* The same recovery with distillation under `torchrun --nproc_per_node=2` (DDP, gloo) against one
  process, same global batch: accuracy and wall time.
* ResNet-20 structurally pruned to half its MACs, recovered with distillation (``--resnet``).

Run: ``make bench-recovery`` (add ``ARGS=--resnet`` style flags by calling the script directly).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, setup, write_results  # noqa: E402
from torchslim.checkpoint import save_checkpoint  # noqa: E402
from torchslim.data import load_dataset  # noqa: E402
from torchslim.measure import accuracy, count_macs, sparsity  # noqa: E402
from torchslim.recovery import FinetuneConfig, finetune  # noqa: E402
from torchslim.training import DistillConfig  # noqa: E402
from torchslim.training.baseline import baseline_path, get_baseline  # noqa: E402


def _prune_global(model, amount):
    from torchslim.pruning import MagnitudeConfig, make_permanent, prune

    pruned, _ = prune(model, MagnitudeConfig(amount=amount, scope="global"))
    return make_permanent(pruned)


def lenet5_rows(epochs: int) -> list[dict]:
    test = load_dataset("fashion-mnist", "test")
    base, _ = get_baseline("lenet5", train_if_missing=False)
    base_acc = accuracy(base, test)
    pruned = _prune_global(base, 0.9)
    rows = [{"model": "lenet5", "method": "global magnitude 90%, no fine-tuning", "accuracy": accuracy(pruned, test),
             "baseline_accuracy": base_acc, "sparsity": sparsity(pruned), "wall_s": 0.0, "processes": 1, "epochs": 0}]
    common = dict(epochs=epochs, lr=0.01, batch_size=128)
    for label, cfg, teacher in (
        ("90% + fine-tune", FinetuneConfig(**common), None),
        ("90% + fine-tune + distillation", FinetuneConfig(**common, distill=DistillConfig(temperature=4.0, alpha=0.7)), base),
    ):
        t0 = time.perf_counter()
        new, res = finetune(pruned, cfg, teacher=teacher, quiet=True)
        rows.append({"model": "lenet5", "method": label, "accuracy": accuracy(new, test), "baseline_accuracy": base_acc,
                     "sparsity": sparsity(new), "wall_s": round(time.perf_counter() - t0, 1), "processes": 1,
                     "epochs": epochs})  # fmt: skip
    return rows, pruned, base_acc


def ddp_rows(pruned, base_acc: float, epochs: int) -> list[dict]:
    """Same distillation recovery through the CLI: 1 process (2 threads) vs torchrun 2 x 1 thread."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        src = save_checkpoint(pruned, Path(d) / "pruned.safetensors", architecture="lenet5")
        teacher = baseline_path("lenet5")
        args = ["-m", "torchslim.cli", "{threads}", "finetune", str(src), "--teacher", str(teacher), "--epochs", str(epochs),
                "--lr", "0.01", "--batch-size", "128", "--quiet"]  # fmt: skip
        runs = {
            1: [sys.executable, *args],
            2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
        }
        for procs, cmd in runs.items():
            out = Path(d) / f"ddp{procs}.safetensors"
            threads = ["--threads", "2" if procs == 1 else "1"]
            cmd = [c for part in cmd for c in (threads if part == "{threads}" else [part])] + ["--out", str(out)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": threads[1]}, timeout=3600)
            wall = time.perf_counter() - t0
            sidecar = json.loads(out.with_suffix(".json").read_text())
            meta = sidecar["finetune"]
            rows.append({"model": "lenet5", "method": f"90% + distillation, CLI, {procs} process(es)",
                         "accuracy": meta["test_accuracy"], "baseline_accuracy": base_acc,
                         "sparsity": meta["summary"]["sparsity_after"], "wall_s": round(wall, 1),
                         "train_wall_s": round(sidecar["run"]["finetune_wall_s"], 1), "processes": procs, "epochs": epochs})  # fmt: skip
    return rows


def resnet_rows(epochs: int | None) -> list[dict]:
    from _resnet20_structured import LABEL, pruned_and_recovered

    test = load_dataset("fashion-mnist", "test")
    base, _ = get_baseline("resnet20", train_if_missing=False)
    base_acc = accuracy(base, test)
    x = test.images[:1]
    pruned, new, info = pruned_and_recovered(base, epochs)
    macs0, macs1 = count_macs(base, x), count_macs(pruned, x)
    return [{"model": "resnet20", "method": f"{LABEL}: {macs0 / macs1:.2f}x fewer MACs + distillation",
             "accuracy": accuracy(new, test), "baseline_accuracy": base_acc, "accuracy_after_pruning": accuracy(pruned, test),
             "macs": macs1, "baseline_macs": macs0, "wall_s": info["finetune_s"], "processes": 1, "epochs": info["epochs"],
             "bar": "within 0.5 pt of FP32"}]  # fmt: skip


SECTIONS = ("lenet5", "ddp", "resnet20")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}; "
                    "rows of the sections run replace their earlier rows")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=3, help="LeNet-5 recovery epochs (all LeNet-5 rows)")
    ap.add_argument("--resnet-epochs", type=int, default=None, help="default: _resnet20_structured.FINETUNE")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    if bad := [s for s in only if s not in SECTIONS]:
        raise SystemExit(f"unknown section(s) {bad}; choose from {SECTIONS}")
    setup()
    rows: list[dict] = []
    if "lenet5" in only or "ddp" in only:
        lenet, pruned, base_acc = lenet5_rows(args.epochs)
        rows += [dict(r, section="lenet5") for r in lenet] if "lenet5" in only else []
        if "ddp" in only:
            rows += [dict(r, section="ddp") for r in ddp_rows(pruned, base_acc, args.epochs)]
    if "resnet20" in only:
        rows += [dict(r, section="resnet20") for r in resnet_rows(args.resnet_epochs)]
    path = RESULTS / "recovery.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    for r in old:  # rows written before sections were recorded
        r.setdefault("section", "ddp" if "CLI" in r["method"] else r["model"])
    rows = [r for r in old if r["section"] not in only] + rows
    rows.sort(key=lambda r: SECTIONS.index(r["section"]))
    notes = ("Fashion-MNIST test split, cached FP32 baselines, 2 CPU threads (DDP: 2 processes x 1 thread, gloo). "
             "Distillation: T=4, alpha=0.7. All recoveries of one model use the same epochs, lr and seed. "
             "ResNet-20: see benchmarks/_resnet20_structured.py (the same recovered model as bench-pruning's row).")  # fmt: skip
    write_results("recovery", rows, notes=notes,
                  columns=["model", "method", "accuracy", "baseline_accuracy", "accuracy_after_pruning", "sparsity",
                           "macs", "baseline_macs", "epochs", "wall_s", "processes"])  # fmt: skip
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
