"""Issue 19: a malformed report.json given to ``torchslim report`` is one line and exit 2, and nothing
in the folder is touched (three shapes of it ended in raw TypeErrors)."""

from pathlib import Path

import pytest

from torchslim.cli import main


@pytest.mark.parametrize(("text", "message"), [
    ("[1]", "field (top level): Input should be a valid dictionary"),
    ('{"stages": "x"}', "field stages: Input should be a valid list"),
    ('{"stages": [1, 2], "recipe": 5}', "field stages.0: Input should be a valid dictionary"),
    ('{"stages": []}', "field stages: List should have at least 1 item"),
    ('{"stages": [{"name": "b", "size_bytes": 1, "layers": [{"name": "fc"}]}]}', "field stages.0.layers.0.type: Field required"),
    ("{", "JSONDecodeError"),
])  # fmt: skip
def test_malformed_report_json(tmp_path: Path, capsys, text: str, message: str):
    (tmp_path / "report.json").write_text(text)
    rc = main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"torchslim: error: {tmp_path / 'report.json'} is not a report torchslim wrote (")
    assert message in err[0] and err[0].endswith("rerun `torchslim compress` to write it again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_models_with_an_unknown_family_is_refused(capsys):
    rc = main(["models", "--family", "lenett"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("torchslim: error: no model family 'lenett'; choose one of lenet, ") and err.endswith("Did you mean: lenet?")


@pytest.mark.parametrize("n", ["0", "-1", "100000", "x"])
def test_export_tokens_out_of_range_is_a_usage_error(tmp_path: Path, capsys, n: str):
    with pytest.raises(SystemExit) as exc:
        main(["export", "lenet300", str(tmp_path / "m.onnx"), "--tokens", n])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --tokens" in err and "Traceback" not in err
    assert ("give 1 to 8192" in err) or ("is not a whole number" in err)
    assert list(tmp_path.iterdir()) == []


def test_calib_samples_out_of_range_is_refused(tmp_path: Path, capsys):
    rc = main(["--threads", "1", "quantize", "lenet300", "--method", "int8_static", "--data", "digits",
               "--calib-samples", "100000000000000000000", "--out", str(tmp_path / "q.safetensors")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "torchslim: error: --calib-samples must be 1 to 10,000,000, got 100000000000000000000"
    assert list(tmp_path.iterdir()) == []
