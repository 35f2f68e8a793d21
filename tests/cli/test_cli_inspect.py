"""``torchslim inspect``: the rows in --json, the reasons on stdout, every mistake one line with exit code 2."""

import json
from pathlib import Path

from torchslim.cli import main


def run(capsys, *argv):
    rc = main(["--threads", "1", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_inspect_lenet5_on_digits_writes_the_rows_and_prints_why_not(tmp_path: Path, capsys):
    rc, out, err = run(capsys, "inspect", "lenet5", "--data", "digits", "--json", str(tmp_path / "i.json"),
                       "--markdown", str(tmp_path / "i.md"))  # fmt: skip
    assert rc == 0, err
    assert "fc2 (Linear) cannot structured: Linear fc2 produces the model output: its output channels are fixed" in out
    assert "best MACs: 2,293,000 -> 646,500 (3.547x fewer)" in out
    res = json.loads((tmp_path / "i.json").read_text())
    assert res["model"] == "lenet5" and res["data"] == "digits" and res["split"] == "test"
    assert [(r["name"], r["params"], r["macs"]) for r in res["rows"]] == [
        ("conv1", 520, 288_000), ("conv2", 25_050, 1_600_000), ("fc1", 400_500, 400_000), ("fc2", 5_010, 5_000)]  # fmt: skip
    assert res["summary"]["macs"] == 2_293_000 and sorted(res["rows"][2]["applies"]) == sorted(
        ["int8_dynamic", "int8_static", "weight_only", "magnitude", "nm", "structured"])  # fmt: skip
    assert (tmp_path / "i.md").read_text().startswith("# torchslim inspect: LeNet5")


def test_inspect_without_data_says_what_is_unknown(tmp_path: Path, capsys):
    rc, out, _ = run(capsys, "inspect", "lenet5", "--json", str(tmp_path / "i.json"))
    assert rc == 0 and "no --data" in out and "best MACs: unknown (no example input: pass data)" in out
    res = json.loads((tmp_path / "i.json").read_text())
    assert res["summary"]["macs"] is None and res["rows"][0]["note"] == "no example input: pass data"
    assert res["rows"][0]["cannot"]["structured"].startswith("no example input: pass data")


def test_inspect_mistakes_are_one_line_with_exit_code_2(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "colour.py").write_text("import torch\n\ndef images():\n    return torch.randn(4, 3, 32, 32)\n")
    (tmp_path / "taken.json").write_text("{}")
    cases = [
        (["inspect", "nosuchpkg.models:make"], "cannot import nosuchpkg.models"),
        (["inspect", "lenet-5"], "unknown model 'lenet-5'"),
        (["inspect", "lenet5", "--data", "colour.py:images"], "the model cannot take the first batch of data"),
        (["inspect", "lenet5", "--json", "taken.json"], "taken.json exists; pass --force"),
    ]
    for argv, message in cases:
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert (tmp_path / "taken.json").read_text() == "{}"
    rc, _, _ = run(capsys, "inspect", "lenet5", "--json", "taken.json", "--force")
    assert rc == 0 and json.loads((tmp_path / "taken.json").read_text())["rows"]
