"""Sensitivity: the metric when only one layer is pruned or quantized, for every layer and option.

Each candidate is one model built through the public verbs (:func:`torchslim.planning.space.build`
with one layer changed) and one pass over a fixed validation subset. Every candidate also records
what the objective reads from it: the stored bytes, the MACs (exact, from the built model) and,
for ``latency``, nothing per layer (latency is measured end to end on the finalists; one layer's
change is within the timing noise).

Results are cached on disk under a digest of the model's weights, the data subset, the space and
the metric, so a rerun is instant. Under ``torchrun`` (a ``torch.distributed`` process group, gloo
on CPU) the candidates are dealt round-robin to the ranks and gathered, so every rank holds the
same table as one process would compute.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import TorchSlimError
from torchslim.planning.space import FLOAT, NONE, Choice, Space, build

CACHE_VERSION = 1


@dataclass
class Entry:
    layer: str
    choice: Choice
    value: float | None  # the metric (None: the candidate could not be built)
    drop: float | None  # baseline - value, in the direction where positive is worse
    macs: int | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "prune": self.choice.prune, "bits": self.choice.bits, "value": self.value,
                "drop": self.drop, "macs": self.macs, **({"error": self.error} if self.error else {})}  # fmt: skip

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Entry:
        return Entry(d["layer"], Choice(d["prune"], d["bits"]), d["value"], d["drop"], d.get("macs"), d.get("error", ""))


@dataclass
class Sensitivity:
    """The baseline and one entry per (layer, option); ``drop`` is positive when the metric got worse."""

    metric: str
    baseline: float
    baseline_macs: int | None
    entries: list[Entry]
    samples: int
    wall_s: float = 0.0
    processes: int = 1
    cached: bool = False
    digest: str = ""
    _index: dict[tuple[str, Choice], Entry] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {(e.layer, e.choice): e for e in self.entries}

    def get(self, layer: str, choice: Choice) -> Entry | None:
        return self._index.get((layer, choice))

    def predicted_drop(self, layer: str, choice: Choice, prune_weight: float = 1.0) -> float | None:
        """One layer's drop at ``choice``: pruning and precision measured alone, added (None: not buildable).
        ``prune_weight`` scales the pruning part (fine-tuning after pruning recovers much of it)."""
        if choice == NONE:
            return 0.0
        total = 0.0
        for part, weight in ((Choice(choice.prune, FLOAT), prune_weight), (Choice(0.0, choice.bits), 1.0)):
            if part == NONE:
                continue
            e = self.get(layer, part)
            if e is None or e.drop is None:
                return None
            total += weight * max(e.drop, 0.0)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, "metric": self.metric, "baseline": self.baseline,
                "baseline_macs": self.baseline_macs, "samples": self.samples, "wall_s": self.wall_s,
                "processes": self.processes, "digest": self.digest,
                "entries": [e.to_dict() for e in self.entries]}  # fmt: skip

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Sensitivity:
        return Sensitivity(d["metric"], d["baseline"], d.get("baseline_macs"), [Entry.from_dict(e) for e in d["entries"]],
                           d["samples"], d.get("wall_s", 0.0), d.get("processes", 1), digest=d.get("digest", ""))  # fmt: skip


# ----------------------------------------------------------------------------- digests and cache
def _tensor_digest(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str((t.dtype, tuple(t.shape))).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_digest(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__qualname__.encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            _tensor_digest(h, v)
    return h.hexdigest()


def data_digest(batches: list[tuple[Any, Any]]) -> str:
    """Digest of the evaluated inputs and targets (what the metric reads)."""
    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            _tensor_digest(h, v)
        elif isinstance(v, dict):
            for k in sorted(v):
                h.update(str(k).encode())
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        else:
            h.update(repr(v).encode())

    for b in batches:
        walk(b)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("TORCHSLIM_CACHE", Path.home() / ".cache" / "torchslim")) / "sensitivity"


# ----------------------------------------------------------------------------- distribution
def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the torch.distributed group, ``(0, 1)`` outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(local: list[tuple[int, dict[str, Any]]], world: int) -> list[tuple[int, dict[str, Any]]]:
    if world == 1:
        return local
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, local)
    return [x for p in parts for x in p]


# ----------------------------------------------------------------------------- the sweep
def candidates(space: Space) -> list[tuple[str, Choice]]:
    """Every (layer, single option) the sweep measures: each pruning ratio in float, each bit width unpruned."""
    out = []
    for name, ls in space.layers.items():
        out += [(name, Choice(p, FLOAT)) for p in ls.prune if p > 0]
        out += [(name, Choice(0.0, b)) for b in ls.bits if b != FLOAT]
    return out


def sweep(
    model: nn.Module,
    space: Space,
    score: Callable[[nn.Module], float],
    *,
    calib: Any,
    example: Any,
    higher_is_better: bool,
    metric: str,
    samples: int,
    digest: str,
    cache_dir: Path | None,
    progress: Callable[[str], None] | None = None,
) -> Sensitivity:
    """Measure every candidate of ``space`` (see the module docstring); ``score(model)`` is the metric on the
    validation subset, ``digest`` names the data and settings for the cache."""
    from torchslim.measure import count_macs

    key = hashlib.sha256(f"{CACHE_VERSION}|{model_digest(model)}|{digest}|{json.dumps(space.to_dict(), sort_keys=True)}"
                         .encode()).hexdigest()[:32]  # fmt: skip
    path = cache_dir / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            got = Sensitivity.from_dict(json.loads(path.read_text()))
            got.cached = True
            return got
        except (ValueError, KeyError, TypeError):
            pass  # a stale or damaged cache file is recomputed (and replaced below)
    rank, world = rank_and_world()
    t0 = time.perf_counter()
    base = score(model)
    base_macs = _macs(count_macs, model, example)
    todo = candidates(space)
    local = []
    for i, (layer, choice) in enumerate(todo):
        if i % world != rank:
            continue
        if progress is not None:
            progress(f"sensitivity {i + 1}/{len(todo)}: {layer} {choice.label}")
        try:
            m = build(model, space, {layer: choice}, calib)
        except TorchSlimError as exc:  # this option does not apply to this layer: recorded, never fatal
            local.append((i, Entry(layer, choice, None, None, error=str(exc).splitlines()[0][:300]).to_dict()))
            continue
        v = score(m)
        drop = (base - v) if higher_is_better else (v - base)
        macs = _macs(count_macs, m, example) if space.prune_method == "structured" else None
        local.append((i, Entry(layer, choice, v, drop, macs).to_dict()))
    gathered = sorted(_gather(local, world), key=lambda x: x[0])
    entries = [Entry.from_dict(d) for _, d in gathered]
    result = Sensitivity(metric, base, base_macs, entries, samples, time.perf_counter() - t0, world, digest=key)
    if path is not None and rank == 0:
        from torchslim.io import write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result.to_dict())
    return result


def _macs(count: Callable[..., int], model: nn.Module, example: Any) -> int | None:
    try:
        return int(count(model, example))
    except Exception:  # noqa: BLE001 - an op without a FLOP formula: the planner then uses parameters
        return None
