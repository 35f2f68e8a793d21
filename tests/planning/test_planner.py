"""plan(): within the budget on the validation split, smaller than the best uniform mix, checked inputs."""

import pytest
import torch

from torchslim.errors import BudgetError, ConfigError, DataError
from torchslim.models import create_model
from torchslim.planning import plan
from torchslim.recipes.recipe import load_recipe

FAST = dict(trials=0, val_samples=400, cache_dir=None, finetune=None, calibration_samples=128)


def test_size_plan_is_within_budget_smaller_than_uniform_and_a_valid_recipe(train_tiny, tmp_path):
    model = train_tiny("lenet300", 6)
    r = plan(model, "digits", max_drop=1.0, objective="size", ratios=(0.5, 0.75, 0.9), **FAST)
    assert r.chosen["drop"] <= 1.0
    assert r.chosen["size_bytes"] * 4 < r.baseline["size_bytes"]  # INT4/INT8 + pruning: over 4x smaller
    within = [u for u in r.uniform if u["drop"] <= 1.0]
    assert r.chosen["size_bytes"] <= min(u["size_bytes"] for u in within)
    recipe = load_recipe(r.recipe)
    assert recipe.settings.dataset == "digits" and recipe.steps
    # the returned model is the planned one: its validation accuracy is the reported one
    from torchslim.data import load_dataset
    from torchslim.measure.metrics import compute_metric

    val = load_dataset("digits", "val")
    assert compute_metric(r.model.eval(), val, "accuracy")["value"] == pytest.approx(r.chosen["value"])
    assert all(not n.endswith("_orig") for n, _ in model.named_parameters())  # the input model is untouched
    files = r.write(tmp_path / "out")
    assert sorted(files) == ["pareto.png", "plan.json", "plan.md", "recipe.yaml", "sensitivity.png"]
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    assert load_recipe(tmp_path / "out" / "recipe.yaml").to_dict()["steps"] == recipe.to_dict()["steps"]


@pytest.mark.slow
def test_latency_plan_is_measured_in_the_shipped_runtime(train_tiny):
    model = train_tiny("lenet5", 3)
    r = plan(model, "digits", max_drop=1.0, objective="latency", ratios=(0.5,), latency_runs=5, latency_batch=16, **FAST)
    for c in [r.baseline, *r.candidates]:
        assert c["latency_ms"] > 0 and c["fp32_latency_ms"] > 0 and c["cost"] == c["latency_ms"]
    assert any(c["runtime"] != "eager" for c in r.candidates if c["assignment"])  # static INT8 timed as compile_int8
    assert r.chosen["drop"] <= 1.0


@pytest.mark.slow
def test_finetuning_runs_the_recipe_steps_on_the_best_few(train_tiny):
    model = train_tiny("lenet5", 3)
    ft = {"epochs": 1, "lr": 0.01, "max_steps": 5, "distill": {"temperature": 4.0, "alpha": 0.7}}
    r = plan(model, "digits", max_drop=2.0, objective="size", ratios=(0.5, 0.9), trials=0, val_samples=300,
             cache_dir=None, finetune=ft, finalists=2, calibration_samples=128)  # fmt: skip
    tuned = r.finalists
    assert 1 <= len(tuned) <= 2 and all(t["from"] for t in tuned)
    if r.chosen["kind"] == "finetuned":
        assert [s["type"] for s in r.recipe["steps"]][:2] == ["magnitude", "finetune"]
    assert r.chosen["drop"] <= 2.0


def test_evolutionary_trials_are_built_and_scored(train_tiny):
    model = train_tiny("lenet300", 6)
    r = plan(model, "digits", max_drop=1.0, objective="size", ratios=(0.5, 0.9), trials=6, val_samples=300,
             cache_dir=None, finetune=None)  # fmt: skip
    evolved = [c for c in r.candidates if c["kind"] == "evolve"]
    assert len(evolved) >= 6 and all(c["size_bytes"] > 0 for c in evolved)


def test_budgets_and_metrics_are_checked_before_work(train_tiny):
    model = create_model("lenet300")
    with pytest.raises(ConfigError, match="give exactly one budget"):
        plan(model, "digits", **FAST)
    with pytest.raises(ConfigError, match="give exactly one budget"):
        plan(model, "digits", max_drop=1.0, min_value=0.5, **FAST)
    with pytest.raises(ConfigError, match="max_drop must be a positive number"):
        plan(model, "digits", max_drop=-1.0, **FAST)
    with pytest.raises(ConfigError, match="lower-is-better: pass minimize=True"):
        plan(model, "digits", max_drop=0.1, metric="output_error", **FAST)
    with pytest.raises(ConfigError, match="unknown objective"):
        plan(model, "digits", max_drop=1.0, objective="speed", **FAST)


def test_a_budget_no_candidate_meets_names_the_closest(train_tiny):
    model = train_tiny("lenet300", 3)
    with pytest.raises(BudgetError, match=r"no candidate meets the budget .* The closest candidate, .* loses"):
        plan(model, "digits", max_drop=1e-9, metric="output_error", minimize=True, ratios=(0.9,), **FAST)
    with pytest.raises(BudgetError, match="already past the floor"):
        plan(model, "digits", min_value=101.0, **FAST)


def test_validation_data_must_not_be_the_test_data():
    x = torch.randn(64, 1, 28, 28)
    loader = [(x[i : i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 64, 16)]
    with pytest.raises(DataError, match="validation split shares 64 of its 64 samples with the test split"):
        plan(create_model("lenet300"), loader, max_drop=1.0, **FAST)
    splits = {"train": loader, "test": loader}
    with pytest.raises(DataError, match="has none"):
        plan(create_model("lenet300"), splits, max_drop=1.0, **FAST)


def test_a_model_nothing_can_compress_is_told_so():
    class Lookup(torch.nn.Module):  # only the output layer holds channels, and structured pruning keeps it
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(50, 8)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.emb(x))

    x = torch.randint(0, 50, (40, 5))
    y = torch.randint(0, 3, (40,))
    splits = {s: [(x[i : i + 10], y[i : i + 10]) for i in range(k, k + 20, 10)] for s, k in (("train", 0), ("val", 20))}
    with pytest.raises(BudgetError, match="nothing in this model could be compressed for objective 'macs'.*fc "):
        plan(Lookup().eval(), splits, max_drop=1.0, objective="macs", **FAST)


def test_the_planned_model_is_timed_against_fp32(train_tiny):
    r = plan(train_tiny("lenet300", 3), "digits", max_drop=2.0, objective="size", **FAST)
    s = r.speed
    assert s is not None and s.latency_ms > 0 and s.reference_latency_ms > 0
    d = r.to_dict()["speed"]
    assert d["speedup"] == pytest.approx(s.reference_latency_ms / s.latency_ms, rel=1e-6)
    if s.slower:  # weight-only layers dequantize on every call: the guard must say why
        assert s.reasons
