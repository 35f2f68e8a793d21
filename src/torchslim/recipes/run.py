"""``compress``: run a recipe on a model, measure every step, write artifact + report atomically."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchslim.data.protocol import as_data, first_input, output_tensor
from torchslim.errors import CheckpointError, ConfigError, TargetError, suggest
from torchslim.measure.metrics import check_metric
from torchslim.measure.speed import SPEED_RUNS, SpeedCheck, check_required_speedup
from torchslim.modes import kept_mode
from torchslim.recipes.context import StepContext
from torchslim.recipes.measure import histograms, measure_stage, weights_by_layer
from torchslim.recipes.recipe import Recipe, load_recipe
from torchslim.surgery import check_finite

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

    @property
    def speed(self) -> SpeedCheck:
        """The final model timed interleaved with the model the recipe started from (the speed guard)."""
        return SpeedCheck.from_dict(self.data["speed"])


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
    data: Any = None,
    input_fn: Callable[[Any], Any] | None = None,
    target_fn: Callable[[Any], Any] | None = None,
    metric: Any = None,
    tokenizer: Any = None,
    quiet: bool = False,
    require_speedup: float | None = None,
) -> CompressResult:
    """Run ``recipe`` on a copy of ``model``; measure the baseline and every step.

    ``recipe`` is a YAML path, YAML text, or the same data in Python. With ``out`` the folder
    receives ``recipe.yaml`` (resolved), ``model.safetensors`` (the artifact), ``metrics.json``,
    ``report.json/.html/.md``, written atomically (an existing folder needs ``force``).
    ``architecture`` names the registered model so the artifact reloads on its own.

    ``data`` (any source :func:`torchslim.sources.resolve_data` takes, or a DataLoader / batches,
    read with ``input_fn`` / ``target_fn``) replaces the recipe's ``dataset``; ``metric`` (default:
    the recipe's) is what every stage reports (see :mod:`torchslim.measure.metrics`; ``fidelity``
    and ``output_error`` compare with ``model``); ``tokenizer`` reads a sentences file.

    Every step's model is timed interleaved with ``model`` (batch 64 and 1, ``latency_runs`` runs);
    the final one's check is ``result.speed`` / ``data["speed"]``: its speed-up, whether it is
    slower, and why (see :mod:`torchslim.measure.speed`). With ``require_speedup`` a final model
    slower than that at either batch size raises :class:`~torchslim.errors.SpeedError` before
    anything is written.

    >>> from torchslim.models import create_model
    >>> r = compress(create_model("lenet300"), [{"type": "evaluate"}], overrides=["dataset=digits"], quiet=True)
    >>> [s["name"] for s in r.stages]
    ['baseline', '1. evaluate']
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"compress takes an nn.Module, not {type(model).__name__}")
    if require_speedup is not None:
        check_required_speedup(require_speedup)
    if out is not None:  # before anything is loaded: an output folder must never cost the user a file
        from torchslim.io import check_out_dir

        check_out_dir(out, force=force, inputs=[p for p in (recipe, data, data_dir) if isinstance(p, str | Path)])
    check_finite(model, "compress")
    recipe = load_recipe(recipe, overrides)
    _check_targets(model, recipe)
    metric = recipe.settings.metric if metric is None else metric
    check_metric(metric, model)
    ctx = StepContext(data if data is not None else recipe.settings.dataset, quiet=quiet,
                      calibration_samples=recipe.settings.calibration_samples, data_dir=data_dir, input_fn=input_fn,
                      target_fn=target_fn, tokenizer=tokenizer, metric=metric)  # fmt: skip
    test = ctx.data("test")  # loaded and checked against the model before any step runs
    as_data(test).check(model, "the test data")
    if out is None:
        return _run(model, recipe, None, architecture, architecture_config, ctx, quiet, require_speedup)
    from torchslim.io import atomic_dir

    with atomic_dir(out, force=force) as tmp:  # a SpeedError inside leaves no folder and any old one untouched
        result = _run(model, recipe, tmp, architecture, architecture_config, ctx, quiet, require_speedup)
    result.out = Path(out)
    return result


def _measure(model: nn.Module, test: Any, ctx: StepContext, speed_reference: tuple[nn.Module, Any, str] | None,
             **meas: Any) -> dict[str, Any]:  # fmt: skip
    from torchslim.quantization import timed_runtime

    runtime, name = timed_runtime(model)  # a static INT8 CNN is timed as the compile_int8 lowering it ships as
    return measure_stage(model, test, metric=ctx.metric, reference=ctx.teacher, runtime=runtime, runtime_name=name,
                         speed_reference=speed_reference, **meas)  # fmt: skip


def _speed_line(check: SpeedCheck) -> str:
    from rich.markup import escape

    style = "bold red" if check.slower else "green" if check.faster else "yellow"
    return f"[{style}]speed: {escape(check.verdict())}[/]"


def _run(model: nn.Module, recipe: Recipe, folder: Path | None, architecture: str | None,
         architecture_config: dict[str, Any] | None, ctx: StepContext, quiet: bool,
         require_speedup: float | None = None) -> CompressResult:  # fmt: skip
    from torchslim.quantization import timed_runtime

    settings = recipe.settings
    con = _Console(quiet)
    teacher = copy.deepcopy(model).eval()
    ctx.teacher, ctx.run_dir = teacher, folder
    test = ctx.data("test")
    where = ctx.dataset if isinstance(ctx.dataset, (str, Path)) else type(ctx.dataset).__name__
    meas = dict(architecture=architecture, architecture_config=architecture_config, latency_runs=settings.latency_runs)
    con.line(f"[bold]{recipe.settings.name}[/]: {len(recipe.steps)} steps on {where}")
    base = {"name": "baseline", "type": None, "wall_s": 0.0, **_measure(model, test, ctx, None, **meas)}
    base.update(compression_ratio=1.0, speedup_b1=1.0, speedup_b64=1.0)
    speed_reference = (teacher, *timed_runtime(teacher))  # every step is timed interleaved with the input model
    stages = [base]
    con.line(f"baseline: {base['metric']} {base['metric_value']:.4g}  size {base['size_bytes']:,} B")
    current = model
    for i, step in enumerate(recipe.steps, 1):
        con.line(f"[bold]step {i}/{len(recipe.steps)}[/]: {step.type}")
        ctx.targets = step.targets
        t0 = time.perf_counter()
        current, report = step.spec.run(current, step.config, ctx)
        wall = time.perf_counter() - t0
        # The final model's check is the speed guard's verdict: never fewer than SPEED_RUNS interleaved runs.
        final_runs = max(settings.latency_runs, SPEED_RUNS) if i == len(recipe.steps) else None
        m = _measure(current, test, ctx, speed_reference, speed_runs=final_runs, **meas)
        stage = {
            "name": f"{i}. {step.type}", "type": step.type, "wall_s": wall, "config": step.to_dict(),
            "report": report.to_dict() if report is not None else None, **m,
            "compression_ratio": base["size_bytes"] / m["size_bytes"],
        }  # fmt: skip
        stages.append(stage)
        con.line(f"  {m['metric']} {m['metric_value']:.4g}  size {m['size_bytes']:,} B  ({stage['compression_ratio']:.1f}x)  "
                 f"sparsity {100 * m['sparsity']:.1f}%  speed-up {m['speedup_b64']:.2f}x (batch 64)  {wall:.1f}s")  # fmt: skip
    speed = SpeedCheck.from_dict(stages[-1]["speed"])
    con.line(_speed_line(speed))
    speed.require(require_speedup)  # before anything is written
    data: dict[str, Any] = {
        "title": f"{settings.name}: {architecture or type(model).__name__} on {where}",
        "model": architecture or type(model).__name__, "dataset": str(where), "metric": base["metric"],
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "recipe": recipe.to_dict(), "stages": stages,
        "histograms": histograms(weights_by_layer(model), weights_by_layer(current)),
        "bits_table": _bits_table(stages), "speed": stages[-1]["speed"],
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
    meta = {"kind": "compressed", "recipe": recipe.settings.name, final["metric"]: final["metric_value"],
            "dataset": data["dataset"]}  # fmt: skip
    path = save_checkpoint(model, folder / ARTIFACT, architecture=architecture, architecture_config=architecture_config,
                           meta=meta)  # fmt: skip
    size = path.stat().st_size
    try:
        reloaded, _ = load_checkpoint(path, model=None if architecture else original)
    except CheckpointError as exc:
        raise CheckpointError(f"the artifact did not reload ({exc}); nothing was written") from exc
    with torch.inference_mode(), kept_mode(model):
        x = first_input(test)
        identical = bool(torch.equal(output_tensor(x(reloaded.eval())), output_tensor(x(model.eval()))))
    data["artifact"] = {"file": ARTIFACT, "size_bytes": size, "reload_identical_outputs": identical,
                        "compression_ratio": data["stages"][0]["size_bytes"] / size}  # fmt: skip
    write_json(folder / "metrics.json", {"stages": [{k: v for k, v in s.items() if k not in ("layers", "report")}
                                                    for s in data["stages"]], "artifact": data["artifact"]})  # fmt: skip
    write_json(folder / "report.json", data)
    files = render_report(folder)
    return ["recipe.yaml", ARTIFACT, ARTIFACT.replace(".safetensors", ".json"), "metrics.json", "report.json", *files]
