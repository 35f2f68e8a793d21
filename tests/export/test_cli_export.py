import json

from torchslim.checkpoint import save_checkpoint
from torchslim.cli import main
from torchslim.transformers.testing import save_tiny_bert


def test_export_hf_folder_and_checkpoint(tmp_path, capsys):
    folder = save_tiny_bert(tmp_path / "tiny")
    assert main(["export", str(folder), str(tmp_path / "a.onnx"), "--json", str(tmp_path / "a.json"), "--max-abs-diff", "1e-3"]) == 0
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["max_abs_diff"] < 1e-3 and rep["inputs"] == ["input_ids", "attention_mask"]
    from torchslim.models import create_model

    ck = save_checkpoint(create_model("lenet300"), tmp_path / "l.safetensors", architecture="lenet300")
    assert main(["export", str(ck), str(tmp_path / "l.onnx")]) == 0


def test_export_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "o.onnx").write_text("x")
    assert main(["export", "lenet300", str(tmp_path / "o.onnx")]) == 2
    assert "already exists" in capsys.readouterr().err
    folder = save_tiny_bert(tmp_path / "tiny")
    (folder / "model.safetensors").unlink()
    assert main(["export", str(folder), str(tmp_path / "b.onnx")]) == 2
    assert "holds no weights" in capsys.readouterr().err and not (tmp_path / "b.onnx").exists()
