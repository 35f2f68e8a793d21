"""Searching per-layer sparsity and bit width jointly: a sensitivity-guided greedy path, then an
evolutionary search (Optuna's NSGA-II) seeded with it.

The greedy search predicts a configuration's drop as the sum of its layers' measured drops (each
layer's pruning and precision measured alone) and its cost from the objective's model of the layer
(stored bytes, measured MACs). From nothing compressed, it repeatedly takes the one layer change
with the most cost saved per predicted drop, which traces a path from the float model to the most
compressed one. Points along the path are then built and scored for real; the evolutionary search
starts from them and explores mixes the additive prediction misjudges. Every point it reports was
built and measured, never predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchslim.planning.sensitivity import Sensitivity
from torchslim.planning.space import FLOAT, NONE, Assignment, Choice, Space, stored_weight_bytes

INT8_SPEED = 0.35  # the greedy's latency proxy: an integer layer's share of the time vs float (finalists are timed)


@dataclass
class CostModel:
    """The objective predicted from per-layer facts; used only to order the search."""

    space: Space
    sens: Sensitivity
    base_bytes: int
    layer_macs: dict[str, int] = field(default_factory=dict)

    def macs_saved(self, layer: str, choice: Choice) -> float:
        if choice.prune == 0:
            return 0.0
        e = self.sens.get(layer, Choice(choice.prune, FLOAT))
        if e is None or e.macs is None or self.sens.baseline_macs is None:
            return self.layer_macs.get(layer, 0) * choice.prune
        return float(self.sens.baseline_macs - e.macs)

    def __call__(self, assign: Assignment) -> float:
        obj = self.space.objective
        if obj == "size":
            saved = 0.0
            for n, c in assign.items():
                w = self.space.layers[n].weights
                saved += w * 4 - stored_weight_bytes(w, c, self.space)
            return self.base_bytes - saved
        base = float(self.sens.baseline_macs or sum(self.layer_macs.values()))
        if obj == "macs":
            return base - sum(self.macs_saved(n, c) for n, c in assign.items())
        # latency proxy: MACs left, integer layers' MACs weighted by INT8_SPEED
        total = base - sum(self.macs_saved(n, c) for n, c in assign.items())
        for n, c in assign.items():
            if c.bits != FLOAT:
                left = self.layer_macs.get(n, 0) * (1 - c.prune)
                total -= left * (1 - INT8_SPEED)
        return total


def _stronger(a: Choice, b: Choice) -> bool:
    """``b`` compresses at least as much as ``a`` in both knobs, and differs."""
    return b != a and b.prune >= a.prune and b.bits <= a.bits


def predicted_drop(sens: Sensitivity, assign: Assignment) -> float | None:
    total = 0.0
    for n, c in assign.items():
        d = sens.predicted_drop(n, c)
        if d is None:
            return None
        total += d
    return total


def greedy_path(space: Space, sens: Sensitivity, cost: CostModel, *, limit: float, resolution: float,
                prune_weight: float = 1.0) -> list[tuple[Assignment, float, float]]:  # fmt: skip
    """``[(assignment, predicted drop, predicted cost)]`` from nothing compressed until the predicted
    drop passes ``limit`` or nothing more can be compressed. ``prune_weight`` < 1 orders the moves for
    a recipe that fine-tunes after pruning (and quantizes after it): a pruning loss is partly
    recovered, a quantization loss is not. ``resolution`` is the smallest drop told apart from none
    (moves that lose less are ordered by their saving alone)."""
    state: Assignment = {n: NONE for n in space.layers}
    drops = {n: 0.0 for n in space.layers}
    cur_cost = cost(state)
    path = [(dict(state), 0.0, cur_cost)]
    eps = max(resolution, 1e-12)
    while True:
        best: tuple[float, str, Choice, float, float] | None = None
        for n in space.layers:
            for c in space.options(n):
                if not _stronger(state[n], c):
                    continue
                d = sens.predicted_drop(n, c, prune_weight)
                if d is None:
                    continue
                trial = {**state, n: c}
                gain = cur_cost - cost(trial)
                if gain <= 0:
                    continue
                extra = d - drops[n]
                score = gain / max(extra, eps)
                if best is None or score > best[0]:
                    best = (score, n, c, d, cost(trial))
        if best is None:
            break
        _, n, c, d, new_cost = best
        state[n] = c
        drops[n] = d
        cur_cost = new_cost
        total = sum(drops.values())
        path.append((dict(state), total, cur_cost))
        if total > limit:
            break
    return path


def pick_along(path: Sequence[tuple[Assignment, float, float]], levels: Sequence[float], spread: int = 8,
               whole: bool = False) -> list[Assignment]:  # fmt: skip
    """Path points to build and score: for each drop level the cheapest point predicted within it,
    plus ``spread`` points evenly spaced along the path up to the highest level (``whole``: along the
    whole path; the additive prediction often misjudges mixes, real scores decide). Deduplicated, in
    path order."""
    chosen: set[int] = set()
    for lv in levels:
        ok = [i for i, (_, d, _) in enumerate(path) if d <= lv]
        if ok:
            chosen.add(min(ok, key=lambda j: path[j][2]))
    last = len(path) - 1 if whole else max((i for i, (_, d, _) in enumerate(path) if d <= max(levels, default=0.0)), default=0)
    if spread > 0 and last > 0:
        chosen.update(round(last * k / spread) for k in range(1, spread + 1))
    return [path[i][0] for i in sorted(chosen)]


def evolve(
    space: Space,
    evaluate: Callable[[Assignment], tuple[float, float]],
    seeds: Sequence[Assignment],
    *,
    trials: int,
    seed: int = 0,
) -> list[Assignment]:
    """Optuna NSGA-II over every layer's options, minimizing (drop, cost); ``evaluate`` builds and scores
    each trial for real. Returns the assignments it tried (the seeds are enqueued first)."""
    from torchslim.errors import require

    optuna: Any = require("optuna", "plan")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    labels = {n: {_key(c): c for c in space.options(n)} for n in space.layers}
    # The first generation is the seeds (the greedy path's measured points), so the generations after it
    # cross and mutate good mixes instead of sampling 20-odd layers at random.
    sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, len(seeds)))
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for s in seeds:
        study.enqueue_trial({n: _key(c) for n, c in s.items()})
    tried: list[Assignment] = []

    def objective(trial: Any) -> tuple[float, float]:
        assign = {n: labels[n][trial.suggest_categorical(n, list(labels[n]))] for n in space.layers}
        tried.append(assign)
        return evaluate(assign)

    study.optimize(objective, n_trials=len(seeds) + trials)
    return tried


def _key(c: Choice) -> str:
    return f"p{c.prune:g}-b{c.bits}"


def pareto(points: Sequence[dict[str, Any]], x: str, y: str) -> list[dict[str, Any]]:
    """Points not dominated in (lower ``x``, lower ``y``), sorted by ``x``."""
    pts = sorted(points, key=lambda p: (p[x], p[y]))
    front: list[dict[str, Any]] = []
    best = float("inf")
    for p in pts:
        if p[y] < best:
            front.append(p)
            best = p[y]
    return front
