"""``torchslim plan``: a ready recipe and its evidence in --out; every mistake one line, exit code 2."""

import json
from pathlib import Path

import pytest

from torchslim.checkpoint import save_checkpoint
from torchslim.cli import main
from torchslim.recipes.recipe import load_recipe

FAST = ["--search", "greedy", "--no-finetune", "--val-samples", "200", "--calibration-samples", "128", "--no-cache",
        "--ratios", "0.5,0.9", "--quiet"]  # fmt: skip


def run(capsys, *argv):
    rc = main(["--threads", "1", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def ckpt(train_tiny, tmp_path_factory):
    return str(save_checkpoint(train_tiny("lenet300", 6), tmp_path_factory.mktemp("m") / "m.safetensors", architecture="lenet300"))


def test_plan_writes_a_recipe_that_compress_runs(ckpt, tmp_path: Path, capsys):
    out = tmp_path / "plan"
    rc, _, err = run(capsys, "plan", "--model", ckpt, "--data", "digits", "--max-drop", "1", "--objective", "size",
                     "--out", str(out), *FAST)  # fmt: skip
    assert rc == 0, err
    assert {p.name for p in out.iterdir()} >= {"recipe.yaml", "plan.json", "pareto.png", "sensitivity.png", "plan.md"}
    doc = json.loads((out / "plan.json").read_text())
    assert doc["chosen"]["drop"] <= 1.0 and doc["chosen"]["size_bytes"] < doc["baseline"]["size_bytes"] / 3
    assert load_recipe(out / "recipe.yaml").steps
    rc, _, err = run(capsys, "compress", "--model", ckpt, "--recipe", str(out / "recipe.yaml"), "--out",
                     str(tmp_path / "c"), "--quiet")  # fmt: skip
    assert rc == 0, err
    final = json.loads((tmp_path / "c" / "metrics.json").read_text())["stages"][-1]
    # the recipe ships the model the planner measured (the artifact's header also names its architecture)
    assert abs(final["size_bytes"] - doc["chosen"]["size_bytes"]) < 0.01 * doc["chosen"]["size_bytes"]


def test_an_existing_out_folder_is_refused_before_any_work(ckpt, tmp_path: Path, capsys):
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "mine.txt").write_text("keep")
    rc, _, err = run(capsys, "plan", "--model", ckpt, "--data", "digits", "--max-drop", "1", "--out",
                     str(tmp_path / "plan"), *FAST)  # fmt: skip
    assert rc == 2 and "exists" in err and (tmp_path / "plan" / "mine.txt").read_text() == "keep"


def test_usage_mistakes_are_one_line(ckpt, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--model", ckpt, "--max-drop", "1", "--min-value", "0.9", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plan", "--model", ckpt, "--max-drop", "1", "--ratios", "0.5,1.5", "--out", str(tmp_path / "o")])
    assert "strictly between 0 and 1" in capsys.readouterr().err
    rc, _, err = run(capsys, "plan", "--model", ckpt, "--data", "digits", "--max-drop", "0.1", "--metric", "output_error",
                     "--out", str(tmp_path / "o"), *FAST)  # fmt: skip
    assert rc == 2 and "lower-is-better: pass minimize=True (CLI: --minimize)" in err and not (tmp_path / "o").exists()
