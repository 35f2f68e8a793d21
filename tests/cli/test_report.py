import json

from torchslim.cli import main


def test_report_rerenders_from_report_json(tmp_path, capsys):
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: digits\nlatency_runs: 2\nsteps:\n  - type: evaluate\n")
    assert main(["compress", "--model", "lenet300", "--recipe", str(recipe), "--out", str(out), "--quiet"]) == 0
    (out / "report.html").unlink()
    data = json.loads((out / "report.json").read_text())
    data["title"] = "renamed run"
    (out / "report.json").write_text(json.dumps(data))
    assert main(["report", str(out)]) == 0
    assert "<h1>renamed run</h1>" in (out / "report.html").read_text()
    assert "report.html" in capsys.readouterr().out


def test_report_on_a_folder_without_report_json(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err
