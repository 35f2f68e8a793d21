import json

from torchslim.checkpoint import load_checkpoint
from torchslim.cli import main
from torchslim.quantization import QConv2d, WeightOnlyLinear


def test_cli_quantizes_and_saves(tmp_path, capsys):
    out = tmp_path / "q.safetensors"
    rc = main(["quantize", "lenet5", "--method", "int8-static", "--observer", "percentile", "--out", str(out),
               "--dataset", "digits", "--calib-samples", "64", "--report-json", str(tmp_path / "r.json")])  # fmt: skip
    assert rc == 0
    model, meta = load_checkpoint(out)
    assert isinstance(model.conv1, QConv2d)
    assert meta["quantize_config"]["observer"] == "percentile"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["layers"]["int8-static"] == 4
    rc = main(["quantize", "lenet300", "--method", "weight-only", "--bits", "4", "--group-size", "64",
               "--out", str(tmp_path / "w"), "--dataset", "digits", "--calib-samples", "32"])  # fmt: skip
    assert rc == 0 and isinstance(load_checkpoint(tmp_path / "w.safetensors")[0].fc1, WeightOnlyLinear)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    rc = main(["quantize", "lenet300", "--method", "weight-only", "--bits", "3", "--out", str(tmp_path / "x"),
               "--dataset", "digits"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "WeightOnlyConfig: bits: Input should be 4 or 8" in err and err.count("\n") == 1
    rc = main(["quantize", "lenet300", "--method", "int8-dynamic", "--targets", '{"fc9": null}',
               "--out", str(tmp_path / "y"), "--dataset", "digits"])  # fmt: skip
    assert rc == 2 and "fc9" in capsys.readouterr().err
    rc = main(["quantize", "lenet300", "--method", "int8-static", "--observer", "best",
               "--out", str(tmp_path / "z"), "--dataset", "digits"])  # fmt: skip
    assert rc == 2 and "observer" in capsys.readouterr().err
    assert not any(tmp_path.glob("*.safetensors"))
