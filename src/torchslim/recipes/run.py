"""``compress``: run a recipe on a model, measure every step, write artifact + report atomically."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import CheckpointError, ConfigError, TargetError, suggest
from torchslim.recipes.context import StepContext
from torchslim.recipes.measure import histograms, measure_stage, weights_by_layer
from torchslim.recipes.recipe import Recipe, load_recipe

ARTIFACT = "model.safetensors"


@dataclass
class CompressResult:
    """The compressed model, the validated recipe, and every measured stage (baseline first)."""

    model: nn.Module
    recipe: Recipe
    stages: list[dict[str, Any]]
    data: dict[str, Any]
    out: Path | None = None
    files: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.stages[-1]


def _check_targets(model: nn.Module, recipe: Recipe) -> None:
    """Plain target names must name a layer or a layer type of the model (regexes are checked by the verb)."""
    modules = dict(model.named_modules())
    type_names = {t.__name__ for m in modules.values() for t in type(m).__mro__}
    for i, step in enumerate(recipe.steps, 1):
        for pat in step.targets or {}:
            if not pat.startswith("re:") and pat not in modules and pat not in type_names:
                raise TargetError(
                    f"{step.where}: step {i} ({step.type}): target {pat!r} is neither a layer nor a layer type of "
                    f"this model.{suggest(pat, [n for n in modules if n])} Use 're:<regex>' for patterns"
                )


class _Console:
    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.console = Console(stderr=True)

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False)


def compress(
    model: nn.Module,
    recipe: str | Path | Mapping[str, Any] | Sequence[Any] | Recipe,
    *,
    out: str | Path | None = None,
    force: bool = False,
    overrides: Iterable[str] = (),
    architecture: str | None = None,
    architecture_config: dict[str, Any] | None = None,
    data_dir: str | None = None,
    quiet: bool = False,
) -> CompressResult:
    """Run ``recipe`` on a copy of ``model``; measure the baseline and every step.

    ``recipe`` is a YAML path, YAML text, or the same data in Python. With ``out`` the folder
    receives ``recipe.yaml`` (resolved), ``model.safetensors`` (the artifact), ``metrics.json``,
    ``report.json/.html/.md``, written atomically (an existing folder needs ``force``).
    ``architecture`` names the registered model so the artifact reloads on its own.

    >>> from torchslim.models import create_model
    >>> r = compress(create_model("lenet300"), [{"type": "evaluate"}], overrides=["dataset=digits"], quiet=True)
    >>> [s["name"] for s in r.stages]
    ['baseline', '1. evaluate']
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"compress takes an nn.Module, not {type(model).__name__}")
    recipe = load_recipe(recipe, overrides)
    _check_targets(model, recipe)
    if out is None:
        return _run(model, recipe, None, architecture, architecture_config, data_dir, quiet)
    from torchslim.io import atomic_dir

    with atomic_dir(out, force=force) as tmp:
        result = _run(model, recipe, tmp, architecture, architecture_config, data_dir, quiet)
    result.out = Path(out)
    return result


def _run(model: nn.Module, recipe: Recipe, folder: Path | None, architecture: str | None,
         architecture_config: dict[str, Any] | None, data_dir: str | None, quiet: bool) -> CompressResult:  # fmt: skip
    settings = recipe.settings
    con = _Console(quiet)
    teacher = copy.deepcopy(model).eval()
    ctx = StepContext(settings.dataset, teacher=teacher, quiet=quiet, calibration_samples=settings.calibration_samples,
                      data_dir=data_dir, run_dir=folder)  # fmt: skip
    test = ctx.data("test")
    meas = dict(architecture=architecture, architecture_config=architecture_config, latency_runs=settings.latency_runs)
    con.line(f"[bold]{recipe.settings.name}[/]: {len(recipe.steps)} steps on {settings.dataset}")
    base = {"name": "baseline", "type": None, "wall_s": 0.0, **measure_stage(model, test, **meas)}  # type: ignore[arg-type]
    base["compression_ratio"] = 1.0
    stages = [base]
    con.line(f"baseline: accuracy {base['accuracy']:.2f}%  size {base['size_bytes']:,} B")
    current = model
    for i, step in enumerate(recipe.steps, 1):
        con.line(f"[bold]step {i}/{len(recipe.steps)}[/]: {step.type}")
        ctx.targets = step.targets
        t0 = time.perf_counter()
        current, report = step.spec.run(current, step.config, ctx)
        wall = time.perf_counter() - t0
        m = measure_stage(current, test, **meas)  # type: ignore[arg-type]
        stage = {
            "name": f"{i}. {step.type}", "type": step.type, "wall_s": wall, "config": step.to_dict(),
            "report": report.to_dict() if report is not None else None, **m,
            "compression_ratio": base["size_bytes"] / m["size_bytes"],
        }  # fmt: skip
        stages.append(stage)
        con.line(f"  accuracy {m['accuracy']:.2f}%  size {m['size_bytes']:,} B  ({stage['compression_ratio']:.1f}x)  "
                 f"sparsity {100 * m['sparsity']:.1f}%  {wall:.1f}s")  # fmt: skip
    data: dict[str, Any] = {
        "title": f"{settings.name}: {architecture or type(model).__name__} on {settings.dataset}",
        "model": architecture or type(model).__name__, "dataset": settings.dataset,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "recipe": recipe.to_dict(), "stages": stages,
        "histograms": histograms(weights_by_layer(model), weights_by_layer(current)),
        "bits_table": _bits_table(stages),
    }  # fmt: skip
    from torchslim.checkpoint import versions

    data["versions"] = versions()
    result = CompressResult(current, recipe, stages, data)
    if folder is not None:
        result.files = _write(folder, current, model, recipe, data, architecture, architecture_config, test)
    return result


def _bits_table(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for s in reversed(stages):
        rep = s.get("report") or {}
        table = (rep.get("summary") or {}).get("bits_table")
        if table:
            return table
    return []


def _write(folder: Path, model: nn.Module, original: nn.Module, recipe: Recipe, data: dict[str, Any],
           architecture: str | None, architecture_config: dict[str, Any] | None, test: Any) -> list[str]:  # fmt: skip
    from torchslim.checkpoint import load_checkpoint, save_checkpoint
    from torchslim.io import write_json
    from torchslim.report import render_report

    (folder / "recipe.yaml").write_text(recipe.to_yaml())
    # Kept small on purpose: this header is part of the artifact's bytes; recipe.yaml has the rest.
    final = data["stages"][-1]
    meta = {"kind": "compressed", "recipe": recipe.settings.name, "accuracy": final["accuracy"],
            "dataset": recipe.settings.dataset}  # fmt: skip
    path = save_checkpoint(model, folder / ARTIFACT, architecture=architecture, architecture_config=architecture_config,
                           meta=meta)  # fmt: skip
    size = path.stat().st_size
    try:
        reloaded, _ = load_checkpoint(path, model=None if architecture else original)
    except CheckpointError as exc:
        raise CheckpointError(f"the artifact did not reload ({exc}); nothing was written") from exc
    with torch.inference_mode():
        x = test.images[:256]
        identical = bool(torch.equal(reloaded.eval()(x).argmax(1), model.eval()(x).argmax(1)))
    data["artifact"] = {"file": ARTIFACT, "size_bytes": size, "reload_identical_predictions": identical,
                        "compression_ratio": data["stages"][0]["size_bytes"] / size}  # fmt: skip
    write_json(folder / "metrics.json", {"stages": [{k: v for k, v in s.items() if k not in ("layers", "report")}
                                                    for s in data["stages"]], "artifact": data["artifact"]})  # fmt: skip
    write_json(folder / "report.json", data)
    files = render_report(folder)
    return ["recipe.yaml", ARTIFACT, ARTIFACT.replace(".safetensors", ".json"), "metrics.json", "report.json", *files]
