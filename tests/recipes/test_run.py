import json

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from torchslim.checkpoint import load_checkpoint
from torchslim.errors import DataError, OutputExistsError, TargetError
from torchslim.models import create_model
from torchslim.recipes import compress, register_step

SHARE_CODE = [{"type": "weight_sharing", "bits": 3, "bias_bits": 3}, {"type": "huffman_coding", "index_bits": 4}]
FAST = ["dataset=digits", "latency_runs=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("runs") / "dc"
    model = create_model("lenet300")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = compress(model, SHARE_CODE, out=out, overrides=FAST, architecture="lenet300", quiet=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    return out, res


def test_output_folder_holds_artifact_recipe_metrics_and_report(run_dir):
    out, res = run_dir
    for f in ("recipe.yaml", "model.safetensors", "metrics.json", "report.json", "report.html", "report.md",
              "figures/accuracy_vs_size.png", "figures/weight_histograms.png"):
        assert (out / f).is_file(), f
    assert not any(p.name.endswith(".tmp") for p in out.parent.iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    names = [s["name"] for s in metrics["stages"]]
    assert names == ["baseline", "1. weight_sharing", "2. huffman_coding"]
    for s in metrics["stages"]:
        for k in ("accuracy", "size_bytes", "compression_ratio", "latency_ms_b1", "latency_ms_b64", "macs", "sparsity"):
            assert s[k] is not None, (s["name"], k)
    assert metrics["stages"][0]["macs"] == 266200


def test_artifact_reloads_alone_with_identical_predictions(run_dir):
    out, res = run_dir
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta["recipe"] == "recipe" and meta["dataset"] == "digits"
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), res.model(x))
    art = json.loads((out / "report.json").read_text())["artifact"]
    assert art["reload_identical_outputs"] is True
    assert art["size_bytes"] == (out / "model.safetensors").stat().st_size
    # 3-bit codebook indices on dense weights, Huffman coded: > 10x smaller than FP32.
    assert art["compression_ratio"] > 10


def test_report_carries_bits_table_and_layer_bits(run_dir):
    _, res = run_dir
    table = {r["layer"]: r for r in res.data["bits_table"]}
    assert set(table) == {"fc1", "fc2", "fc3", "total"}
    assert table["fc1"]["weight_bits"] == 3 and table["fc1"]["weight_bits_huffman"] <= 3
    final_bits = {r["name"]: r["bits"] for r in res.stages[-1]["layers"]}
    assert final_bits == {"fc1": 3.0, "fc2": 3.0, "fc3": 3.0}
    assert {r["name"]: r["bits"] for r in res.stages[0]["layers"]} == {"fc1": 32.0, "fc2": 32.0, "fc3": 32.0}


def test_existing_output_is_refused_unless_force(run_dir, tmp_path):
    out, _ = run_dir
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--force"):
        compress(create_model("lenet300"), [{"type": "evaluate"}], out=out, overrides=FAST, quiet=True)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    target = tmp_path / "again"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="not an output folder torchslim wrote"):  # --force or not
        compress(create_model("lenet300"), [{"type": "evaluate"}], out=target, force=True, overrides=FAST, quiet=True)
    assert (target / "old.txt").read_text() == "old"
    (out / "old.txt").write_text("old")  # a folder torchslim wrote is replaced whole with force
    compress(create_model("lenet300"), [{"type": "evaluate"}], out=out, force=True, overrides=FAST, quiet=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file() and (out / ".torchslim-output").is_file()


class _Boom(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _interrupt(model, config, ctx):
    raise KeyboardInterrupt


def test_interrupted_run_leaves_nothing_half_written(tmp_path):
    register_step("test_interrupt", _Boom, _interrupt)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        compress(create_model("lenet300"), [{"type": "evaluate"}, {"type": "test_interrupt"}], out=out,
                 overrides=FAST, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_target_names_are_checked_before_work():
    with pytest.raises(TargetError, match="Did you mean: fc1"):
        compress(create_model("lenet300"), [{"type": "test_targets", "targets": {"fc_1": None}}], overrides=FAST)


register_step("test_targets", _Boom, lambda m, c, ctx: (m, None), accepts_targets=True)


@pytest.mark.slow
def test_finetune_then_deep_compression(tmp_path):
    torch.manual_seed(0)
    recipe = [
        {"type": "finetune", "epochs": 2, "lr": 0.05, "batch_size": 64},
        {"type": "deep_compression", "prune": {"default_keep": 0.2, "schedule": "one-shot", "train": {"epochs": 1, "batch_size": 64}},
         "share": {"bits": 4}, "share_train": {"epochs": 1, "batch_size": 64, "lr": 0.001}, "code": {"index_bits": "auto"}},
    ]
    res = compress(create_model("lenet300"), recipe, overrides=FAST, architecture="lenet300", quiet=True)
    base, ft, dc = res.stages
    assert ft["accuracy"] > base["accuracy"] + 20
    assert dc["accuracy"] > ft["accuracy"] - 10
    assert dc["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert dc["compression_ratio"] > 20


def test_compress_a_user_model_on_a_dataloader_with_a_user_metric():
    """No built-in data set: a 3-channel model, its own DataLoader, its own metric."""
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from torchslim.recipes import compress

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 16, 16, generator=g)
    loader = DataLoader(TensorDataset(x, torch.randint(0, 4, (64,), generator=g)), batch_size=16)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).train()

    def agree(out, y):
        return (out.argmax(1) == y).float().mean()

    steps = [{"type": "int8_dynamic"}, {"type": "evaluate"}]
    r = compress(model, steps, data=loader, metric=agree, quiet=True, overrides=["latency_runs=2"])
    assert [s["metric"] for s in r.stages] == ["agree"] * 3
    assert r.stages[0]["macs"] == 8 * 3 * 9 * 14 * 14 + 32
    assert abs(r.stages[1]["metric_value"] - r.stages[0]["metric_value"]) <= 2 / 64
    assert model.training is True
    with pytest.raises(DataError, match="cannot take the first batch of the test data"):
        compress(model, steps, data=[torch.randn(4, 1, 28, 28)], quiet=True)
