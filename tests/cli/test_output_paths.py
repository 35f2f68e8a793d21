"""Issue 19: every output path is checked before any work: no output lands on an input, on another
output of the same command, on a folder, or in a folder that cannot be written."""

import hashlib
import os
from pathlib import Path

import pytest

from torchslim.checkpoint import save_checkpoint
from torchslim.cli import main
from torchslim.models import create_model


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}  # fmt: skip


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    (tmp_path / "m.json").unlink()
    (tmp_path / "recipe.yaml").write_text("steps: [{type: int8_dynamic}]\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


QUANT = ["quantize", "m.safetensors", "--method", "int8_dynamic"]


@pytest.mark.parametrize(("argv", "message"), [
    ([*QUANT, "--out", "q.safetensors", "--report-json", "q.safetensors"],
     "q.safetensors is also where this command writes another output; give each output its own path"),
    ([*QUANT, "--out", "q.safetensors", "--report-json", "q.json", "--force"],
     "q.json is also where this command writes another output"),
    ([*QUANT, "--out", "q.safetensors", "--report-json", "/proc/r.json"], "/proc/r.json: cannot write in /proc"),
    ([*QUANT, "--out", "q.safetensors", "--report-json", "sub"], "sub is a folder; give a file name such as sub/report.json"),
    ([*QUANT, "--out", "recipe.yaml", "--force"],
     "--out recipe.yaml: a checkpoint is a .safetensors file (a .json sidecar goes beside it); name it recipe.safetensors"),
    ([*QUANT, "--out", ".", "--force"], "--out . is a folder; give a file name such as model.safetensors"),
    ([*QUANT, "--out", "sub", "--force"], "--out sub is a folder; give a file name such as sub/model.safetensors"),
    ([*QUANT, "--out", "m.json", "--force"], "--out m.safetensors would overwrite the input m.safetensors"),
    ([*QUANT, "--out", "q.json", "--force"], "--out q.json: a checkpoint is a .safetensors file"),
    ([*QUANT, "--out", "m", "--force"], "--out m.safetensors would overwrite the input m.safetensors"),
    (["eval", "m.safetensors", "--json", "sub"], "sub is a folder"),
    (["export", "m.safetensors", "m.onnx", "--json", "m.onnx"], "m.onnx would overwrite the input m.onnx"),
])  # fmt: skip
def test_refused_before_any_work(work: Path, capsys, argv: list[str], message: str):
    before = snapshot(work)
    rc = main(["--threads", "1", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("torchslim: error: ")
    assert message in err[0]
    assert snapshot(work) == before


def test_a_new_folder_for_an_output_is_still_created(work: Path, capsys):
    rc = main(["--threads", "1", *QUANT, "--out", "new/q.safetensors", "--report-json", "new/r.json"])
    assert rc == 0 and (work / "new" / "q.safetensors").is_file() and (work / "new" / "r.json").is_file()
    assert not [p for p in os.listdir(work / "new") if p.endswith(".tmp")]
