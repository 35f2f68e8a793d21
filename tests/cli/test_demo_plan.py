"""The demo's planned route: the plan beside the artifact and its figures in the compress report."""

import json

from torchslim.cli.demo import _attach_plan
from torchslim.planning import plan
from torchslim.recipes import compress


def test_the_report_carries_the_plan(train_tiny, tmp_path):
    model = train_tiny("lenet5", 3)
    r = plan(model, "digits", max_drop=1.0, objective="latency", ratios=(0.5,), trials=0, val_samples=300,
             cache_dir=None, finetune=None, calibration_samples=128, latency_runs=5, latency_batch=16)  # fmt: skip
    out = tmp_path / "demo"
    res = compress(model, r.recipe, out=out, data="digits", quiet=True)
    _attach_plan(out, r)
    assert (out / "plan" / "recipe.yaml").is_file() and (out / "figures" / "plan_pareto.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "figures/plan_pareto.png" in md and "figures/plan_sensitivity.png" in md
    data = json.loads((out / "report.json").read_text())
    assert data["plan"]["chosen"]["label"] == r.chosen["label"]
    assert res.stages[-1]["size_bytes"] < res.stages[0]["size_bytes"]
