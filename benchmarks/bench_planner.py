"""Issue 20's planner benchmark -> benchmarks/results/planner.json (``make bench-planner``).

Sections (``--only a,b``):

* ``resnet20-size`` / ``resnet20-latency``: ResNet-20 (the committed Fashion-MNIST baseline) planned
  under a 0.5 pt budget; the planned model on the test split against the uniform configurations
  (the same fine-tuning for those that prune), the best uniform one within the budget chosen by
  its *test* accuracy (the comparison most favourable to uniform).
* ``minilm``: all-MiniLM-L6-v2 on real sentences, metric embedding fidelity, budget nearest-neighbour
  agreement >= 0.97; the planned INT8 / INT4 / float mix against uniform weight-only INT8 and INT4.
* ``folder``: the small CNN the zoo benchmark trains on an ImageFolder of real Fashion-MNIST PNGs,
  planned for latency under a 1.0 pt budget through the data protocol (the folder path).
* ``torchrun``: the ResNet-20 sensitivity sweep through the CLI in one process (2 threads) and under
  ``torchrun --nproc_per_node=2`` (1 thread each): identical numbers, wall time of the sweep.

Latency is batch 64 (sentences: batch 32), the planned / uniform model in the runtime it ships with,
interleaved with the FP32 model in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, setup, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESNET = str(ROOT / "baselines" / "resnet20-fashion-mnist.safetensors")
FINETUNE = {"epochs": 1, "lr": 0.01, "weight_decay": 0.0005, "max_steps": 300, "distill": {"temperature": 4.0, "alpha": 0.7}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measured(model: torch.nn.Module, fp32: torch.nn.Module, data: Any, metric: Any = "accuracy", key: str = "value",
             batch: int = 64, runs: int = 30, reference: Any = None) -> dict[str, Any]:  # fmt: skip
    """Test metric, file size, MACs and batch latency interleaved with FP32, of a model as it ships."""
    from torchslim.data.protocol import first_input
    from torchslim.measure import count_macs
    from torchslim.measure.latency import compare_latency
    from torchslim.measure.metrics import compute_metric
    from torchslim.quantization import timed_runtime
    from torchslim.recipes.measure import saved_file_size

    res = compute_metric(model.eval(), data, metric, reference=reference)
    example = first_input(data).resized(batch).example()
    runtime, name = timed_runtime(model)
    with torch.inference_mode():
        ref, got, ratio = compare_latency(fp32.eval(), runtime, example, runs=runs, warmup=5, threads=torch.get_num_threads())
    try:
        macs = int(count_macs(model, first_input(data).resized(1).example()))
    except Exception:  # noqa: BLE001 - an op without a FLOP formula
        macs = None
    return {"metric_value": float(res[key]), "size_bytes": saved_file_size(model, None, None), "macs": macs,
            f"latency_ms_b{batch}": got.median_ms, f"fp32_latency_ms_b{batch}": ref.median_ms,
            f"speedup_b{batch}": ratio, "runtime": name}  # fmt: skip


def _uniform_rows(model: torch.nn.Module, result: Any, data: str, choices: list[Any], base_test: float) -> list[dict[str, Any]]:
    """Each uniform configuration through ``compress`` (its own recipe: prune, the same fine-tuning, quantize)."""
    from torchslim.data import load_dataset
    from torchslim.planning.space import steps_for
    from torchslim.recipes import compress

    test = load_dataset(data, "test")
    rows = []
    for c in choices:
        assign = result.space.uniform(c)
        steps = steps_for(model, result.space, assign, FINETUNE)
        t0 = time.perf_counter()
        out = compress(model, {"name": f"uniform-{c.label}", "calibration_samples": 512, "steps": steps}, data=data, quiet=True)
        wall = time.perf_counter() - t0
        m = measured(out.model, model, test)
        rows.append({"method": f"uniform {c.label}" + (" + fine-tuning" if c.prune else ""), "wall_s": round(wall, 1),
                     "processes": 1, **m, "drop": round(base_test - m["metric_value"], 3)})  # fmt: skip
        log(f"  uniform {c.label}: {m['metric_value']:.2f}% {m['size_bytes']:,} B {m['latency_ms_b64']:.2f} ms")
    return rows


def resnet20(objective: str) -> list[dict[str, Any]]:
    from torchslim.data import load_dataset
    from torchslim.planning import Choice, plan
    from torchslim.sources import resolve_model

    model, _ = resolve_model(RESNET)
    model.eval()
    test = load_dataset("fashion-mnist", "test")
    base = measured(model, model, test)
    log(f"resnet20 {objective}: FP32 test {base['metric_value']:.2f}%")
    t0 = time.perf_counter()
    r = plan(model, "fashion-mnist", max_drop=0.5, objective=objective, finetune=FINETUNE, trials=16, finalists=4,
             val_samples=2000, cache_dir=None, quiet=False)  # fmt: skip
    wall = time.perf_counter() - t0
    got = measured(r.model, model, test)
    log(f"  planned: {got['metric_value']:.2f}% {got['size_bytes']:,} B {got['latency_ms_b64']:.2f} ms ({wall:.0f} s)")
    common = {"model": "resnet20", "metric": "accuracy", "baseline_metric": base["metric_value"], "objective": objective}
    rows = [{**common, "method": "FP32 baseline", **base, "drop": 0.0, "wall_s": 0.0, "processes": 1},
            {**common, "method": f"plan {objective} (max drop 0.5)", **got, "drop": round(base["metric_value"] - got["metric_value"], 3),
             "wall_s": round(wall, 1), "processes": 1, "val_drop": round(r.chosen["drop"], 3),
             "recipe": r.recipe["steps"], "phases_s": {k: round(v, 1) for k, v in r.phases.items()}}]  # fmt: skip
    if objective == "size":
        choices = [Choice(0.0, 8), Choice(0.25, 8), Choice(0.5, 8), Choice(0.75, 8)]
    else:
        choices = [Choice(0.0, 8), Choice(0.25, 8), Choice(0.5, 8)]
    rows += [{**common, **u} for u in _uniform_rows(model, r, "fashion-mnist", choices, base["metric_value"])]
    _bar(rows, objective, 0.5)
    return rows


def _bar(rows: list[dict[str, Any]], objective: str, budget: float) -> None:
    """Issue 20's ResNet-20 bar, on the test split."""
    planned = next(r for r in rows if r["method"].startswith("plan"))
    uniform = [r for r in rows if r["method"].startswith("uniform")]
    cost = "size_bytes" if objective == "size" else "latency_ms_b64"
    within = [u for u in uniform if u["drop"] <= budget]
    best = min(within, key=lambda u: u[cost]) if within else None
    planned["planned_within_budget"] = planned["drop"] <= budget
    if best is not None:
        planned["best_uniform_within_budget"] = best["method"]
        planned["cost_ratio_vs_best_uniform"] = round(best[cost] / planned[cost], 3)
    # at equal cost: the uniform configuration closest in cost at or below the planned one
    cheaper = [u for u in uniform if u[cost] <= planned[cost] * 1.05]
    if cheaper:
        near = max(cheaper, key=lambda u: u[cost])
        planned["uniform_at_equal_cost"] = near["method"]
        planned["metric_gain_at_equal_cost"] = round(planned["metric_value"] - near["metric_value"], 3)
    need = 1.3 if objective == "size" else 1.2
    planned["bar"] = (f"within {budget} pt on test; >= 0.5 pt better at equal {objective} or >= {need}x "
                      f"{'smaller' if objective == 'size' else 'faster'} than the best uniform within budget")  # fmt: skip
    planned["bar_met"] = bool(planned["planned_within_budget"] and (
        planned.get("cost_ratio_vs_best_uniform", 0) >= need or planned.get("metric_gain_at_equal_cost", -1) >= 0.5))  # fmt: skip


def minilm() -> list[dict[str, Any]]:
    from torchslim.data.protocol import as_data
    from torchslim.models.transformers import minilm_dir
    from torchslim.planning import Choice, plan
    from torchslim.recipes.context import StepContext
    from torchslim.sources import resolve_model
    from torchslim.transformers.corpus import load_sentences
    from transformers import AutoTokenizer

    folder = str(minilm_dir())
    model, _ = resolve_model(folder)
    model.eval()
    tok = AutoTokenizer.from_pretrained(folder)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sentences.txt"
        path.write_text("\n".join(load_sentences(4096)))
        t0 = time.perf_counter()
        r = plan(model, str(path), min_value=0.97, metric="fidelity", key="nn_agreement", objective="size", prune=False,
                 finetune=None, trials=16, val_samples=1024, tokenizer=tok, cache_dir=None, quiet=False)  # fmt: skip
        wall = time.perf_counter() - t0
        test = as_data(StepContext(str(path), tokenizer=tok).data("test"))
        common = {"model": "all-MiniLM-L6-v2", "metric": "fidelity nn_agreement", "baseline_metric": 1.0, "objective": "size"}

        def row(method: str, m: torch.nn.Module, **extra: Any) -> dict[str, Any]:
            got = measured(m, model, test, metric="fidelity", key="nn_agreement", batch=32, runs=10, reference=model)
            from torchslim.measure.metrics import compute_metric

            got["mean_cos"] = compute_metric(m, test, "fidelity", reference=model)["mean_cos"]
            log(f"  {method}: NN {got['metric_value']:.4f} {got['size_bytes']:,} B")
            return {**common, "method": method, **got, **extra}

        rows.append(row("FP32 baseline", model, wall_s=0.0, processes=1))
        rows.append(row("plan size (NN agreement >= 0.97)", r.model, wall_s=round(wall, 1), processes=1,
                        val_nn_agreement=round(r.chosen["value"], 4), recipe=r.recipe["steps"]))  # fmt: skip
        from torchslim.planning.space import build

        for c in (Choice(0.0, 8), Choice(0.0, 4)):
            rows.append(row(f"uniform weight-only {c.label}", build(model, r.space, r.space.uniform(c), None), wall_s=0.0,
                            processes=1))  # fmt: skip
    planned = rows[1]
    uni8 = rows[2]
    planned["best_uniform_int8_meets_budget"] = uni8["metric_value"] >= 0.97
    planned["size_ratio_vs_uniform_int8"] = round(uni8["size_bytes"] / planned["size_bytes"], 3)
    planned["bar"] = "NN agreement >= 0.97 on test and smaller than the best uniform INT8 within the budget"
    planned["bar_met"] = bool(planned["metric_value"] >= 0.97 and planned["size_bytes"] < uni8["size_bytes"])
    return rows


def folder() -> list[dict[str, Any]]:
    from bench_zoo import folder_spec
    from torchslim.planning import plan
    from torchslim.sources import resolve_data

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        spec = folder_spec(Path(d))
        root = spec.recipe_data
        model = spec.model.eval()
        test = resolve_data(root, "test")
        base = measured(model, model, test)
        t0 = time.perf_counter()
        r = plan(model, root, max_drop=1.0, objective="latency", finetune=FINETUNE | {"max_steps": 100}, trials=8,
                 val_samples=1000, cache_dir=None, quiet=False)  # fmt: skip
        wall = time.perf_counter() - t0
        got = measured(r.model, model, test)
    common = {"model": "folder_cnn (ImageFolder of real Fashion-MNIST PNGs)", "metric": "accuracy",
              "baseline_metric": base["metric_value"], "objective": "latency"}  # fmt: skip
    drop = round(base["metric_value"] - got["metric_value"], 3)
    rows.append({**common, "method": "FP32 baseline", **base, "drop": 0.0, "wall_s": 0.0, "processes": 1})
    rows.append({**common, "method": "plan latency (max drop 1.0)", **got, "drop": drop, "wall_s": round(wall, 1),
                 "processes": 1, "val_drop": round(r.chosen["drop"], 3), "recipe": r.recipe["steps"],
                 "bar": "within 1.0 pt on test, smaller and faster than FP32",
                 "bar_met": bool(drop <= 1.0 and got["size_bytes"] < base["size_bytes"] and got["speedup_b64"] > 1.0)})  # fmt: skip
    log(f"  folder plan: drop {drop} size {got['size_bytes']:,} vs {base['size_bytes']:,}, {got['speedup_b64']:.2f}x")
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun() -> list[dict[str, Any]]:
    rows = []
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        for procs in (1, 2):
            out = Path(d) / f"p{procs}"
            launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                             f"--nproc_per_node={procs}", f"--master_port={_free_port()}"]  # fmt: skip
            cmd = [*launcher, "-m", "torchslim.cli", "--threads", str(2 // procs), "plan", "--model", RESNET, "--data",
                   "fashion-mnist", "--max-drop", "0.5", "--objective", "size", "--search", "greedy", "--no-finetune",
                   "--val-samples", "1000", "--no-cache", "--quiet", "--out", str(out)]  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(2 // procs)})
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            runs[procs] = json.loads((out / "plan.json").read_text())
            log(f"  torchrun {procs} process(es): sweep {runs[procs]['sensitivity']['wall_s']:.1f} s, command {wall:.1f} s")
            rows.append({"model": "resnet20", "method": f"sensitivity sweep, {procs} process(es)", "metric": "accuracy",
                         "baseline_metric": runs[procs]["sensitivity"]["baseline"],
                         "wall_s": round(runs[procs]["sensitivity"]["wall_s"], 1), "command_wall_s": round(wall, 1),
                         "processes": procs, "candidates": len(runs[procs]["sensitivity"]["entries"])})  # fmt: skip
    same = runs[1]["sensitivity"]["entries"] == runs[2]["sensitivity"]["entries"]
    ratio = runs[2]["sensitivity"]["wall_s"] / runs[1]["sensitivity"]["wall_s"]
    rows[1].update({"identical_to_one_process": same, "wall_ratio_vs_one_process": round(ratio, 3),
                    "bar": "identical numbers, wall <= 0.65x of one process", "bar_met": bool(same and ratio <= 0.65)})  # fmt: skip
    return rows


SECTIONS = {"resnet20-size": lambda: resnet20("size"), "resnet20-latency": lambda: resnet20("latency"),
            "minilm": minilm, "folder": folder, "torchrun": torchrun}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    args = ap.parse_args()
    setup()
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    path = RESULTS / "planner.json"
    for name in wanted:
        log(f"section {name}")
        t0 = time.perf_counter()
        got = SECTIONS[name]()
        for r in got:
            r["section"] = name
            r["section_wall_s"] = round(time.perf_counter() - t0, 1)
        # merged with the file as it is now (other sections may have been rerun meanwhile)
        old = json.loads(path.read_text())["rows"] if path.is_file() else []
        rows = [r for r in old if r.get("section") != name] + got
        rows.sort(key=lambda r: list(SECTIONS).index(r["section"]) if r.get("section") in SECTIONS else len(SECTIONS))
        write_results("planner", rows, notes=__doc__.split("\n\n")[0], columns=[
            "section", "model", "method", "metric", "baseline_metric", "metric_value", "drop", "size_bytes", "macs",
            "latency_ms_b64", "speedup_b64", "wall_s", "processes", "bar_met"])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
