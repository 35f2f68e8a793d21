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

from _common import setup, write_results  # noqa: E402

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
            meta = json.loads(out.with_suffix(".json").read_text())["finetune"]
            rows.append({"model": "lenet5", "method": f"90% + distillation, CLI, {procs} process(es)",
                         "accuracy": meta["test_accuracy"], "baseline_accuracy": base_acc,
                         "sparsity": meta["summary"]["sparsity_after"], "wall_s": round(wall, 1),
                         "train_wall_s": round(meta["summary"]["wall_s"], 1), "processes": procs, "epochs": epochs})  # fmt: skip
    return rows


def resnet_rows(epochs: int) -> list[dict]:
    from torchslim.pruning import StructuredConfig, prune

    test = load_dataset("fashion-mnist", "test")
    base, _ = get_baseline("resnet20", train_if_missing=False)
    base_acc = accuracy(base, test)
    x = test.images[:1]
    pruned, _ = prune(base, StructuredConfig(ratio=0.3, scope="layer", input_shape=[1, 1, 28, 28]))
    macs0, macs1 = count_macs(base, x), count_macs(pruned, x)
    t0 = time.perf_counter()
    cfg = FinetuneConfig(epochs=epochs, lr=0.02, batch_size=128, distill=DistillConfig(temperature=4.0, alpha=0.7))
    new, _ = finetune(pruned, cfg, teacher=base, quiet=True)
    return [{"model": "resnet20", "method": f"structured {macs0 / macs1:.2f}x fewer MACs + distillation",
             "accuracy": accuracy(new, test), "baseline_accuracy": base_acc, "macs": macs1, "baseline_macs": macs0,
             "wall_s": round(time.perf_counter() - t0, 1), "processes": 1, "epochs": epochs}]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--resnet", action="store_true", help="also the ResNet-20 structured row (slow on CPU)")
    ap.add_argument("--resnet-epochs", type=int, default=3)
    ap.add_argument("--no-ddp", action="store_true")
    args = ap.parse_args()
    setup()
    rows, pruned, base_acc = lenet5_rows(args.epochs)
    if not args.no_ddp:
        rows += ddp_rows(pruned, base_acc, args.epochs)
    if args.resnet:
        rows += resnet_rows(args.resnet_epochs)
    notes = ("Fashion-MNIST test split, cached FP32 baselines, 2 CPU threads (DDP: 2 processes x 1 thread, gloo). "
             "Distillation: T=4, alpha=0.7. All recoveries of one model use the same epochs, lr and seed.")  # fmt: skip
    write_results("recovery", rows, notes=notes,
                  columns=["model", "method", "accuracy", "baseline_accuracy", "sparsity", "epochs", "wall_s", "processes"])  # fmt: skip
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
