import json

from torchslim.checkpoint import load_checkpoint
from torchslim.cli import main


def test_cli_prunes_and_saves(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    rc = main(["prune", "lenet300", "--method", "magnitude", "--amount", "0.9", "--scope", "global",
               "--out", str(out), "--dataset", "digits", "--report-json", str(tmp_path / "r.json")])  # fmt: skip
    assert rc == 0
    model, meta = load_checkpoint(out)
    assert float((model.fc1.weight == 0).float().mean()) > 0.85
    assert meta["prune_config"]["type"] == "magnitude"
    report = json.loads((tmp_path / "r.json").read_text())
    assert abs(report["summary"]["targeted_sparsity_after"] - 0.9) < 1e-6


def test_cli_bad_amount_exits_2(tmp_path, capsys):
    rc = main(["prune", "lenet300", "--method", "magnitude", "--amount", "1.5", "--out", str(tmp_path / "x"),
               "--dataset", "digits"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "amount must be in [0, 1)" in err and err.count("\n") == 1
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_structured_bad_ratio_and_existing_output(tmp_path, capsys):
    rc = main(["prune", "resnet8", "--method", "structured", "--ratio", "0.9", "--round-to", "16",
               "--out", str(tmp_path / "s"), "--dataset", "digits"])  # fmt: skip
    assert rc == 2 and "would remove all channels of 6 layer(s)" in capsys.readouterr().err
    (tmp_path / "e.safetensors").write_bytes(b"x")
    rc = main(["prune", "lenet300", "--method", "nm", "--out", str(tmp_path / "e.safetensors"), "--dataset", "digits"])
    assert rc == 2 and "exists; pass --force" in capsys.readouterr().err
    rc = main(["prune", "lenet300", "--method", "nm", "--amount", "0.5", "--out", str(tmp_path / "n"), "--dataset", "digits"])
    assert rc == 2 and "NMConfig: amount: unknown field" in capsys.readouterr().err
