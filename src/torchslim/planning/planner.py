"""``plan``: the smallest / fastest / cheapest model within an accuracy budget, as a ready recipe.

1. Per-layer options for the objective (:mod:`torchslim.planning.space`).
2. Sensitivity of every layer and option on a fixed validation subset (cached; sharded under torchrun).
3. A greedy path guided by the sensitivities, the uniform configurations for comparison, and an
   evolutionary search seeded with the path (:mod:`torchslim.planning.search`); every point built
   and scored for real on the validation split, with its real size, MACs or measured latency.
4. The best few points fine-tuned with distillation from the input model (when they prune), the
   recipe's own steps run exactly as ``compress`` runs them, scored again on the validation split.
5. The cheapest finalist within the budget becomes the recipe. The test split is never read,
   except to check that it does not overlap the validation split.

The latency objective is measured on this machine in the runtime the model ships with (a static
INT8 CNN as its ``compile_int8`` lowering), interleaved with the FP32 model; the search orders its
moves by a MAC-based proxy, but every latency the plan reports or chooses by is measured.

>>> import torch, torchslim
>>> from torchslim.planning import plan
>>> r = plan(torchslim.create_model("lenet300"), "digits", max_drop=5.0, objective="size", finetune=None,
...          trials=0, val_samples=200, cache_dir=None)
>>> r.chosen["drop"] <= 5.0 and r.chosen["size_bytes"] < r.baseline["size_bytes"]
True
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import BudgetError, ConfigError, DataError, TorchSlimError
from torchslim.planning.search import CostModel, evolve, greedy_path, pareto, pick_along
from torchslim.planning.sensitivity import (
    Sensitivity,
    data_digest,
    default_cache_dir,
    rank_and_world,
    sweep,
)
from torchslim.planning.space import (
    FLOAT,
    NONE,
    Assignment,
    Choice,
    Space,
    build,
    make_space,
    steps_for,
)

DEFAULT_FINETUNE: dict[str, Any] = {"epochs": 1, "lr": 0.01, "weight_decay": 0.0005,
                                    "distill": {"temperature": 4.0, "alpha": 0.7}}  # fmt: skip
SEARCHES = ("greedy", "evolve")
# How much of a pruning loss the greedy ordering counts when the recipe fine-tunes after pruning (an
# ordering heuristic only: every fine-tuned finalist is scored for real). On ResNet-20 one epoch of
# distillation took 50%-pruned layers from a 6-point loss back to 0.25.
PRUNE_RECOVERY = 0.2


@dataclass
class PlanResult:
    """The planned recipe, the chosen candidate and every candidate measured on the validation split."""

    recipe: dict[str, Any]
    chosen: dict[str, Any]
    baseline: dict[str, Any]
    candidates: list[dict[str, Any]]
    sensitivity: Sensitivity
    space: Space
    settings: dict[str, Any]
    model: nn.Module | None = None
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    speed: Any = None  # the planned model's SpeedCheck against the FP32 input model

    @property
    def uniform(self) -> list[dict[str, Any]]:
        return [c for c in self.candidates if c["kind"] == "uniform"]

    @property
    def finalists(self) -> list[dict[str, Any]]:
        return [c for c in self.candidates if c["kind"] == "finetuned"]

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "baseline": self.baseline, "chosen": self.chosen, "recipe": self.recipe,
                "candidates": self.candidates, "space": self.space.to_dict(),
                "sensitivity": self.sensitivity.to_dict(), "wall_s": self.wall_s, "phases": self.phases,
                "speed": self.speed.as_dict() if self.speed is not None else None}  # fmt: skip

    def recipe_yaml(self) -> str:
        import yaml

        head = (f"# Planned by torchslim plan: objective {self.settings['objective']}, budget {self.settings['budget']}\n"
                f"# validation {self.settings['metric']} {self.chosen['value']:.4g} vs "
                f"{self.baseline.get('value_whole_val', self.baseline['value']):.4g} "
                f"(drop {self.chosen['drop']:.3g}); {self.settings['objective']} {_fmt_cost(self.chosen, self.settings['objective'])} "
                f"vs {_fmt_cost(self.baseline, self.settings['objective'])}\n")  # fmt: skip
        return head + yaml.safe_dump(self.recipe, sort_keys=False, default_flow_style=False)

    def write(self, out: str | Path, *, force: bool = False, inputs: Iterable[Any] = ()) -> list[str]:
        """``recipe.yaml``, ``plan.json``, ``pareto.png``, ``sensitivity.png`` and ``plan.md`` into ``out``,
        atomically (an existing folder needs ``force``)."""
        from torchslim.io import atomic_dir, check_out_dir, write_json
        from torchslim.planning.figures import write_figures

        check_out_dir(out, force=force, inputs=[p for p in inputs if isinstance(p, (str, Path))])
        with atomic_dir(out, force=force) as tmp:
            (tmp / "recipe.yaml").write_text(self.recipe_yaml())
            write_json(tmp / "plan.json", self.to_dict())
            write_figures(self.to_dict(), tmp)
            (tmp / "plan.md").write_text(self.to_markdown())
        return ["recipe.yaml", "plan.json", "pareto.png", "sensitivity.png", "plan.md"]

    def to_markdown(self) -> str:
        obj = self.settings["objective"]
        lines = [f"# Plan: objective {obj}, budget {self.settings['budget']}", "",
                 f"Validation {self.settings['metric']}: baseline {self.baseline.get('value_whole_val', self.baseline['value']):.4g}, planned "
                 f"{self.chosen['value']:.4g} (drop {self.chosen['drop']:.3g}). {obj}: "
                 f"{_fmt_cost(self.baseline, obj)} -> {_fmt_cost(self.chosen, obj)}.", "",
                 "![pareto](pareto.png)", "", "![sensitivity](sensitivity.png)", "",
                 "| candidate | kind | metric | drop | size (B) | MACs | latency (ms) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for c in sorted(self.candidates, key=lambda c: c["cost"]):
            lat = c.get("latency_ms")
            lines.append(f"| {c['label']} | {c['kind']} | {c['value']:.4g} | {c['drop']:.3g} | {c['size_bytes']:,} | "
                         f"{c['macs'] or 0:,} | {'' if lat is None else f'{lat:.3f}'} |")  # fmt: skip
        lines += ["", "```yaml", self.recipe_yaml().rstrip(), "```", ""]
        return "\n".join(lines)


def _fmt_cost(c: Mapping[str, Any], objective: str) -> str:
    if objective == "size":
        return f"{c['size_bytes']:,} B"
    if objective == "macs":
        return f"{c['macs']:,} MACs"
    return f"{c['latency_ms']:.3f} ms"


# ----------------------------------------------------------------------------- checks before work
def _direction(metric: Any, key: str | None, minimize: bool) -> bool:
    """True when higher is better; a lower-is-better metric must be declared with ``minimize``."""
    from torchslim.measure.metrics import higher_is_better, metric_name

    lower = not higher_is_better(metric)
    if lower and not minimize:
        raise ConfigError(f"metric {metric_name(metric)!r} is lower-is-better: pass minimize=True (CLI: --minimize) "
                          "so the budget counts a rise as the loss")  # fmt: skip
    return not minimize


def _budget(max_drop: float | None, min_value: float | None) -> None:
    if (max_drop is None) == (min_value is None):
        raise ConfigError("give exactly one budget: max_drop (the loss allowed, e.g. 0.5 accuracy points) "
                          "or min_value (the metric's floor, e.g. 0.97)")  # fmt: skip
    if max_drop is not None and (not math.isfinite(max_drop) or max_drop <= 0):
        raise ConfigError(f"max_drop must be a positive number (the metric loss allowed), got {max_drop}")
    if min_value is not None and not math.isfinite(min_value):
        raise ConfigError(f"min_value must be a finite number, got {min_value}")


def _rows(data: Any, limit: int | None) -> set[str]:
    """A digest of every sample's first input tensor (to find samples shared by two splits)."""
    from torchslim.data.protocol import as_data

    d = as_data(data)
    out: set[str] = set()
    for b in d:
        t = d.inputs(b).tensors()[0]
        for row in t.detach().cpu().contiguous():
            out.add(hashlib.sha1(row.numpy().tobytes()).hexdigest())
        if limit is not None and len(out) >= limit:
            break
    return out


def _check_overlap(val: Any, test: Any) -> None:
    a = _rows(val, None)
    b = _rows(test, None)
    shared = len(a & b)
    if a and shared / len(a) > 0.05:
        raise DataError(
            f"the validation split shares {shared} of its {len(a)} samples with the test split: the plan would be "
            "chosen on test data. Give separate splits (an image folder with train/ val/ test/, or "
            "{'train': ..., 'val': ..., 'test': ...} from --data pkg.module:factory)"
        )


# ----------------------------------------------------------------------------- the planner
def plan(
    model: nn.Module,
    data: Any,
    *,
    max_drop: float | None = None,
    min_value: float | None = None,
    objective: str = "size",
    metric: Any = "accuracy",
    key: str | None = None,
    minimize: bool = False,
    search: str = "evolve",
    trials: int = 16,
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9),
    prune: bool = True,
    quantize: bool = True,
    bits: tuple[int, ...] | None = None,
    finetune: Mapping[str, Any] | None = DEFAULT_FINETUNE,
    finalists: int = 3,
    val_samples: int = 2000,
    calibration_samples: int = 512,
    latency_batch: int = 64,
    latency_runs: int = 20,
    cache_dir: str | Path | None = "default",
    tokenizer: Any = None,
    input_fn: Callable[[Any], Any] | None = None,
    target_fn: Callable[[Any], Any] | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> PlanResult:
    """Plan per-layer sparsity and bit width for ``model`` on ``data`` within a budget (module docstring).

    ``data`` is any source :func:`torchslim.sources.resolve_data` takes with a ``val`` split (a
    built-in name, an image folder, a sentences file, ``pkg.module:factory``, or a dict of splits).
    The budget is ``max_drop`` (metric loss allowed) or ``min_value`` (the metric's floor). ``key``
    picks one figure of the metric (e.g. ``"nn_agreement"`` of ``"fidelity"``). ``search`` is
    ``"greedy"`` or ``"evolve"`` (greedy, then ``trials`` NSGA-II trials seeded with it).
    ``finetune`` is the fine-tuning step's fields for candidates that prune (``None``: no
    fine-tuning). ``cache_dir=None`` disables the sensitivity cache.
    """
    from torchslim.data.datasets import ImageData
    from torchslim.data.protocol import as_data, first_input
    from torchslim.measure.metrics import check_metric, compute_metric, metric_name
    from torchslim.recipes.context import StepContext
    from torchslim.surgery import check_finite

    t_start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"plan takes an nn.Module, not {type(model).__name__}")
    _budget(max_drop, min_value)
    higher = _direction(metric, key, minimize)
    check_metric(metric, model)
    if search not in SEARCHES:
        raise ConfigError(f"unknown search {search!r}; choose one of {list(SEARCHES)}")
    if trials < 0 or finalists < 1 or val_samples < 1:
        raise ConfigError("trials must be >= 0, finalists >= 1 and val_samples >= 1")
    if finetune is not None:
        from torchslim.recovery import FinetuneConfig

        FinetuneConfig(**finetune)  # a typo is an error before any work
    check_finite(model, "plan")
    model = _same_on_every_rank(model)
    ctx = StepContext(data, quiet=quiet, calibration_samples=calibration_samples, tokenizer=tokenizer,
                      input_fn=input_fn, target_fn=target_fn, metric=metric)  # fmt: skip
    try:
        ctx.data("train")
        has_train = True
    except (ConfigError, DataError):
        has_train = False  # no calibration or fine-tuning data: precision plans without static INT8, no fine-tuning
    if not has_train:
        finetune = None
    space = make_space(model, objective, calibration=has_train, ratios=tuple(ratios), prune=prune, quantize=quantize,
                       bits=bits)  # fmt: skip
    try:
        val = ctx.data("val")
    except (ConfigError, DataError) as exc:
        raise DataError(f"plan scores candidates on a validation split and this data has none: {exc}") from exc
    val_all = val  # the whole validation split: what the final choice is scored on
    val = val.subset(val_samples) if isinstance(val, ImageData) else as_data(as_data(val).take(val_samples), input_fn=input_fn, target_fn=target_fn)
    if isinstance(val, ImageData) and len(val.labels) == 0:
        raise DataError("the validation split is empty; plan scores every candidate on it")
    as_data(val).check(model, "the validation data")
    try:
        test = ctx.data("test")
    except (ConfigError, DataError):
        test = None
    if test is not None:
        _check_overlap(val, test)
    calib = ctx.calibration() if space.quant_method == "int8_static" or space.prune_method == "structured" else None
    teacher = copy.deepcopy(model).eval()
    ctx.teacher = teacher
    name = metric_name(metric)
    pick = key or "value"

    reference = _Memo(teacher)  # fidelity / output_error compare with the FP32 outputs: computed once per batch

    def score(m: nn.Module, data: Any = None) -> float:
        res = compute_metric(m.eval(), val if data is None else data, metric, reference=reference)
        if pick not in res:
            raise ConfigError(f"metric {name!r} has no figure {pick!r}; it gives {sorted(k for k in res if k != 'metric')}")
        return float(res[pick])

    example = first_input(val).resized(1).example()
    if objective == "macs" and not _macs(model, example):
        raise ConfigError("objective 'macs': this model's MACs cannot be counted (an op without a FLOP formula in "
                          "torch.utils.flop_counter); plan for objective 'size' or 'latency' instead")  # fmt: skip
    say = (lambda s: None) if quiet else _printer()
    phases: dict[str, float] = {}

    # -- sensitivity
    t0 = time.perf_counter()
    batches = [(val.images, val.labels)] if isinstance(val, ImageData) else list(as_data(val))
    cdir = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir is not None else None)
    digest = f"{data_digest(batches)}|{name}|{pick}|{calibration_samples}"
    sens = sweep(model, space, score, calib=calib, example=example, higher_is_better=higher, metric=name,
                 samples=_count(val), digest=digest, cache_dir=cdir, progress=say)  # fmt: skip
    phases["sensitivity_s"] = time.perf_counter() - t0

    def search_and_tune() -> PlanResult:
        """Steps 3-5 of the module docstring, on one process."""
        from torchslim.data.protocol import first_input

        base_value = sens.baseline
        budget = max_drop if max_drop is not None else (base_value - min_value if higher else min_value - base_value)  # type: ignore[operator]
        if budget < 0:
            raise BudgetError(f"the input model itself scores {base_value:.4g}, already past the floor {min_value}; "
                              "lower min_value or improve the model first")  # fmt: skip

        # -- real candidates
        from torchslim.recipes.measure import saved_file_size

        base_bytes = saved_file_size(model, None, None)
        cost_model = CostModel(space, sens, base_bytes, _layer_macs(model, example))
        lat_example = first_input(val).resized(latency_batch).example() if objective == "latency" else None
        records: list[dict[str, Any]] = []
        seen: dict[str, dict[str, Any]] = {}
        failed: list[str] = []

        def measure(assign: Assignment, kind: str, label: str, m: nn.Module | None = None) -> dict[str, Any] | None:
            k = _akey(assign)
            if m is None and k in seen:
                return seen[k]
            try:
                built = m if m is not None else build(model, space, assign, calib)
            except TorchSlimError as exc:  # a mix the methods refuse (say, no channel group left): not a candidate
                failed.append(f"{label}: {str(exc).splitlines()[0][:200]}")
                return None
            v = score(built)
            rec = {"kind": kind, "label": label, "value": v, "drop": (base_value - v) if higher else (v - base_value),
                   "size_bytes": saved_file_size(built, None, None), "macs": _macs(built, example),
                   "assignment": {n: [c.prune, c.bits] for n, c in assign.items() if c != NONE}}  # fmt: skip
            if lat_example is not None:
                rec.update(_latency(teacher, built, lat_example, latency_runs))
            rec["cost"] = _cost_of(rec, objective)
            records.append(rec)
            if m is None:
                seen[k] = rec
            say(f"{kind} {label}: {name} {v:.4g} (drop {rec['drop']:.3g}), {_fmt_cost(rec, objective)}")
            return rec

        baseline = {"kind": "baseline", "label": "FP32 input model", "value": base_value, "drop": 0.0,
                    "size_bytes": base_bytes, "macs": _macs(model, example), "assignment": {}}  # fmt: skip
        if lat_example is not None:
            baseline.update(_latency(teacher, teacher, lat_example, latency_runs))
        baseline["cost"] = _cost_of(baseline, objective)

        t0 = time.perf_counter()
        prunes = finetune is not None and space.prune_method is not None
        stretch = 8.0 if prunes else 1.5
        # With fine-tuning the whole path matters: a point that loses points before fine-tuning may
        # recover them, and each point is the sensitivity's best allocation for its cost.
        path = greedy_path(space, sens, cost_model, limit=math.inf,
                           resolution=budget * 1e-3, prune_weight=PRUNE_RECOVERY if prunes else 1.0)  # fmt: skip
        levels = [budget * f for f in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0) if f <= stretch]
        picks = [a for a in pick_along(path, levels, whole=prunes) if any(c != NONE for c in a.values())]
        for i, a in enumerate(picks):
            measure(a, "greedy", f"greedy #{i + 1}: {_describe(a)}")
        for c in _uniform_choices(space):
            measure(space.uniform(c), "uniform", f"uniform {c.label}")
        if not prunes:  # no fine-tuning to come: find the path's last point within the budget by bisection, scored for real
            within = [r["cost"] for r in records if r["drop"] <= budget]
            cheapest_ok = min(within, default=math.inf)

            def scored_within(point: tuple[Assignment, float, float]) -> bool:
                r = measure(point[0], "greedy", f"path point {path.index(point)}/{len(path) - 1}: {_describe(point[0])}")
                return r is not None and r["drop"] <= budget

            _bisect([p for p in path[1:] if p[2] < cheapest_ok], finalists + 3, scored_within)
        phases["greedy_s"] = time.perf_counter() - t0
        if search == "evolve" and trials > 0:
            t0 = time.perf_counter()

            def evaluate(a: Assignment) -> tuple[float, float]:
                r = measure(a, "evolve", f"evolve: {_describe(a)}")
                return (r["drop"], r["cost"]) if r is not None else (math.inf, math.inf)

            evolve(space, evaluate, picks, trials=trials, seed=seed)
            phases["evolve_s"] = time.perf_counter() - t0

        # -- finalists: fine-tuned when they prune, then the cheapest within the budget
        t0 = time.perf_counter()
        for r in pareto([r for r in records if r["kind"] in ("greedy", "evolve")], "cost", "drop"):
            r["on_front"] = True  # the figure's searched front
        front = pareto(records, "cost", "drop")  # uniform configurations compete too: the plan may be one
        chosen_model: nn.Module | None = None
        pool: list[tuple[dict[str, Any], nn.Module | None]] = [(r, None) for r in front if r["drop"] <= budget]
        if prunes:  # fine-tuning may recover what pruning lost; the un-tuned points stay in the pool (it can also hurt)

            def tune(point: tuple[Assignment, float, float]) -> bool:
                full = {n: point[0].get(n, NONE) for n in space.layers}
                m = _run_steps(model, steps_for(model, space, full, finetune), ctx, calibration_samples)
                rec = measure(full, "finetuned", f"path point {path.index(point)}/{len(path) - 1}: {_describe(full)} "
                              "+ fine-tuning", m=m)  # fmt: skip
                rec["from"] = f"greedy path point {path.index(point)} (predicted drop before fine-tuning {point[1]:.3g})"
                pool.append((rec, m))
                return rec["drop"] <= budget

            # fine-tune path points cheaper than the cheapest point already within the budget (predicted cost)
            safe = min((cost_model({n: Choice(*r["assignment"].get(n, (0.0, FLOAT))) for n in space.layers})
                        for r, _ in pool), default=math.inf)  # fmt: skip
            cheaper = [p for p in path if p[2] < safe and any(c.prune > 0 for c in p[0].values())]
            _bisect(cheaper, finalists, tune)
        # The choice is confirmed on the whole validation split (the subset that ranked the candidates
        # also picked them, so its figures flatter the winner), cheapest first.
        best, chosen_model = None, None
        base_full: float | None = None
        for r, m in sorted(((r, m) for r, m in pool if r["drop"] <= budget), key=lambda t: (t[0]["cost"], t[0]["drop"])):
            if base_full is None:
                base_full = baseline["value_whole_val"] = score(model, val_all)
            built = m if m is not None else build(model, space, {n: Choice(*v) for n, v in r["assignment"].items()}, calib)
            v = score(built, val_all)
            r["subset_value"], r["value"] = r["value"], v
            r["drop"] = (base_full - v) if higher else (v - base_full)
            r["scored_on"] = "whole validation split"
            if r["drop"] <= budget:
                best, chosen_model = r, built
                break
        phases["finalists_s"] = time.perf_counter() - t0
        if not records:
            errors = [f"{e.layer} {e.choice.label}: {e.error}" for e in sens.entries if e.error] + failed
            raise BudgetError("nothing in this model could be compressed for objective "
                              f"{objective!r}; the methods refused every option, e.g. {errors[0] if errors else 'none'}")  # fmt: skip
        if best is None:
            closest = min(records, key=lambda r: r["drop"]) if records else None
            hint = (f" The closest candidate, {closest['label']}, loses {closest['drop']:.3g} ({name} {closest['value']:.4g} vs "
                    f"{base_value:.4g})." if closest else "")  # fmt: skip
            raise BudgetError(f"no candidate meets the budget (a loss of at most {budget:.3g} in {name} on the validation "
                              f"split).{hint} Allow a larger loss, add fine-tuning epochs, or plan fewer layers.")  # fmt: skip
        assign = {n: Choice(*best["assignment"].get(n, [0.0, FLOAT])) for n in space.layers}
        if chosen_model is None:
            chosen_model = build(model, space, assign, calib)
        steps = steps_for(model, space, assign, finetune if best["kind"] == "finetuned" else None)
        best["chosen"] = True
        recipe: dict[str, Any] = {"name": f"plan-{objective}",
                                  "description": f"planned by torchslim plan: {objective} within a loss of {budget:.3g} in {name}",
                                  "metric": name if isinstance(metric, str) else "accuracy",
                                  "calibration_samples": calibration_samples, "steps": steps}  # fmt: skip
        if isinstance(data, (str, Path)):
            recipe["dataset"] = str(data)
        from torchslim.recipes.recipe import load_recipe

        load_recipe(recipe)  # the written recipe validates as compress will read it
        settings = {"objective": objective, "budget": budget, "metric": name, "key": pick, "higher_is_better": higher,
                    "search": search, "trials": trials, "ratios": list(ratios), "finetune": dict(finetune) if finetune else None,
                    "finalists": finalists, "val_samples": _count(val), "latency_batch": latency_batch,
                    "processes": sens.processes, "sensitivity_cached": sens.cached}  # fmt: skip
        # the speed guard: the planned model in its runtime against FP32, interleaved, whatever the objective
        from torchslim.measure.speed import speed_check
        from torchslim.quantization import timed_runtime

        runtime, rname = timed_runtime(chosen_model)
        speed = speed_check(chosen_model, teacher, first_input(val).example(), runtime=runtime, runtime_name=rname,
                            batch=latency_batch, reference_name="the FP32 input model")  # fmt: skip
        return PlanResult(recipe, best, baseline, records, sens, space, settings, chosen_model,
                          time.perf_counter() - t_start, phases, speed)

    rank, world = rank_and_world()
    if world > 1:  # the sweep was sharded; the search runs once, on rank 0, and every rank gets its result
        if rank != 0:
            got: list[Any] = [None]
            torch.distributed.broadcast_object_list(got, src=0)
            if isinstance(got[0], BaseException):
                raise got[0]
            return got[0]
        try:
            result = search_and_tune()
        except BaseException as exc:
            torch.distributed.broadcast_object_list([exc], src=0)
            raise
        shared = copy.copy(result)
        shared.model = None
        torch.distributed.broadcast_object_list([shared], src=0)
        return result
    return search_and_tune()


# ----------------------------------------------------------------------------- helpers
def _printer() -> Callable[[str], None]:
    from rich.console import Console

    con = Console(stderr=True)
    return lambda s: con.print(s, highlight=False)


class _Memo(nn.Module):
    """The FP32 reference model, its outputs remembered by the content of the inputs (every candidate
    is scored on the same validation batches, so the reference runs once per batch, not per candidate)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._seen: dict[str, Any] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        h = hashlib.sha1()
        for k, v in [*enumerate(args), *sorted(kwargs.items())]:
            h.update(str(k).encode())
            if isinstance(v, torch.Tensor):
                h.update(str((v.dtype, tuple(v.shape))).encode())
                h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(v).encode())
        key = h.hexdigest()
        if key not in self._seen:
            with torch.inference_mode():
                self._seen[key] = self.model(*args, **kwargs)
        return self._seen[key]


def _same_on_every_rank(model: nn.Module) -> nn.Module:
    """Under torchrun, rank 0's weights on every rank (a model built with random weights differs per
    process); the caller's model is not modified."""
    rank, world = rank_and_world()
    if world == 1:
        return model
    if rank != 0:
        model = copy.deepcopy(model)
    with torch.no_grad():
        for t in model.state_dict().values():
            if isinstance(t, torch.Tensor):
                torch.distributed.broadcast(t, src=0)
    return model


def _count(data: Any) -> int:
    from torchslim.data.datasets import ImageData
    from torchslim.data.protocol import as_data

    return len(data.labels) if isinstance(data, ImageData) else as_data(data).samples()


def _akey(a: Assignment) -> str:
    return ";".join(f"{n}={c.prune:g}/{c.bits}" for n, c in sorted(a.items()) if c != NONE)


def _describe(a: Assignment) -> str:
    changed = {n: c for n, c in a.items() if c != NONE}
    if not changed:
        return "nothing changed"
    q = sum(1 for c in changed.values() if c.bits != FLOAT)
    p = [c.prune for c in changed.values() if c.prune > 0]
    parts = []
    if q:
        parts.append(f"{q} layers quantized")
    if p:
        parts.append(f"{len(p)} pruned (mean {sum(p) / len(p):.0%})")
    return ", ".join(parts)


def _uniform_choices(space: Space) -> list[Choice]:
    ratios = sorted({r for ls in space.layers.values() for r in ls.prune})
    bits = sorted({b for ls in space.layers.values() for b in ls.bits}, reverse=True)
    return [Choice(r, b) for r in ratios for b in bits if Choice(r, b) != NONE]


def _bisect(points: list[tuple[Assignment, float, float]], k: int, within: Callable[[Any], bool]) -> None:
    """Fine-tune at most ``k`` of the path ``points`` by bisection over their cost: a point that ends
    within the budget sends the search to cheaper points, one that does not to safer ones
    (fine-tuning is the expensive step, so it goes where the answer is still open)."""
    pts = sorted(points, key=lambda p: p[2])
    lo, hi = 0, len(pts) - 1
    for _ in range(k):
        if lo > hi:
            return
        mid = (lo + hi) // 2
        if within(pts[mid]):
            hi = mid - 1
        else:
            lo = mid + 1


def _run_steps(model: nn.Module, steps: list[dict[str, Any]], ctx: Any, calibration_samples: int) -> nn.Module:
    """The recipe's steps run as ``compress`` runs them (same step handlers, same context)."""
    from torchslim.recipes.recipe import load_recipe

    recipe = load_recipe({"name": "candidate", "calibration_samples": calibration_samples, "steps": steps})
    current = model
    for step in recipe.steps:
        ctx.targets = step.targets
        current, _ = step.spec.run(current, step.config, ctx)
    ctx.targets = None
    return current


def _macs(model: nn.Module, example: Any) -> int | None:
    from torchslim.measure import count_macs

    try:
        return int(count_macs(model, example))
    except Exception:  # noqa: BLE001 - an op without a FLOP formula
        return None


def _layer_macs(model: nn.Module, example: Any) -> dict[str, int]:
    """MACs of each Conv/Linear layer, from its output shape (the latency proxy's weights)."""
    from torchslim.data.protocol import ModelInput

    out: dict[str, int] = {}
    handles = []
    for n, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and isinstance(w, torch.Tensor):

            def hook(mod: nn.Module, _i: Any, o: Any, n: str = n) -> None:
                t = o[0] if isinstance(o, tuple) else o
                per = t[0].numel() if t.dim() > 0 else 1
                out[n] = out.get(n, 0) + int(per * (mod.weight.numel() // mod.weight.shape[0]))

            handles.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            ModelInput.of(example)(model.eval())
    finally:
        for h in handles:
            h.remove()
    return out


def _latency(reference: nn.Module, model: nn.Module, example: Any, runs: int) -> dict[str, Any]:
    """The model in the runtime it ships with, timed interleaved with the FP32 reference."""
    from torchslim.measure.latency import compare_latency
    from torchslim.quantization import timed_runtime

    runtime, name = timed_runtime(model)
    with torch.inference_mode():
        ref, got, ratio = compare_latency(reference, runtime, example, runs=runs, warmup=max(2, runs // 5),
                                          threads=torch.get_num_threads())  # fmt: skip
    return {"latency_ms": got.median_ms, "fp32_latency_ms": ref.median_ms, "speedup": ratio, "runtime": name}


def _cost_of(rec: Mapping[str, Any], objective: str) -> float:
    if objective == "size":
        return float(rec["size_bytes"])
    if objective == "macs":
        return float(rec["macs"] or 0)
    return float(rec["latency_ms"])
