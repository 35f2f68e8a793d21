import json

import pytest

from torchslim.cli import main

RECIPE = "name: t\ndataset: digits\nlatency_runs: 2\nsteps:\n  - type: weight_sharing\n    bits: 3\n  - type: huffman_coding\n"


@pytest.fixture()
def recipe(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE)
    return p


def test_compress_writes_the_folder_and_force_replaces_it(recipe, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compress", "--model", "lenet300", "--recipe", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "report.html").is_file()
    assert main(["compress", "--model", "lenet300", "--recipe", str(recipe), "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["compress", "--model", "lenet300", "--recipe", str(recipe), "--out", str(out), "--quiet", "--force",
                 "--set", "weight_sharing.bits=2"]) == 0
    resolved = (out / "recipe.yaml").read_text()
    assert "bits: 2" in resolved
    stages = json.loads((out / "report.json").read_text())["stages"]
    assert stages[1]["layers"][0]["bits"] == 2.0


@pytest.mark.parametrize(
    ("text", "sets", "message"),
    [
        ("steps:\n  - type: finetune\n    epochs: [1\n", [], "r.yaml:4:1: recipe is not valid YAML"),
        ("steps:\n  - type: weight_shareing\n", [], "r.yaml:2:11: step 1: unknown step type 'weight_shareing'"),
        ("steps:\n  - type: weight_sharing\n    bits: eight\n", [], "r.yaml:3:11: step 1 (weight_sharing): field 'bits'"),
        ("steps:\n  - type: huffman_coding\n", [], "needs a weight_sharing step"),
        ("steps:\n  - type: weight_sharing\n", ["weight_sharing.bits=99"], "less than or equal to 12"),
    ],
)
def test_bad_recipes_exit_2_with_one_line(tmp_path, capsys, text, sets, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    args = ["compress", "--model", "lenet300", "--recipe", str(p), "--out", str(tmp_path / "o")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_missing_recipe_and_unknown_model(tmp_path, capsys, recipe):
    assert main(["compress", "--model", "lenet300", "--recipe", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compress", "--model", "lenet3000", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "Did you mean: lenet300" in capsys.readouterr().err


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_out_never_costs_the_user_a_file(recipe, tmp_path, capsys, monkeypatch):
    from torchslim.checkpoint import save_checkpoint
    from torchslim.models import create_model

    work = tmp_path / "work"
    work.mkdir()
    model = save_checkpoint(create_model("lenet300"), work / "in.safetensors", architecture="lenet300")
    (work / "notes.txt").write_text("mine")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    cases = [
        (".", "is the current folder"),
        (str(tmp_path), "is the current folder or holds it"),
        (str(work / "in.safetensors"), "would hold or replace the input"),
        (str(mine), "is not an output folder torchslim wrote"),
    ]
    for out, message in cases:
        rc = main(["compress", "--model", str(model), "--recipe", str(recipe), "--out", out, "--quiet", "--force"])
        assert rc == 2 and message in capsys.readouterr().err
    assert _snapshot(tmp_path) == before  # nothing created, changed or deleted
    # The Python API refuses the same folders before any work.
    from torchslim.errors import OutputExistsError
    from torchslim.recipes import compress

    with pytest.raises(OutputExistsError, match="not an output folder torchslim wrote"):
        compress(create_model("lenet300"), str(recipe), out=mine, force=True, quiet=True)
    assert _snapshot(tmp_path) == before
