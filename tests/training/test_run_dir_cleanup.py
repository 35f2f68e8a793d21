"""Issue 19: a killed run leaves temporaries in its run folder; the next run removes them (and only them)."""

from pathlib import Path

import pytest

from torchslim.cli import main
from torchslim.data import load_dataset
from torchslim.io import clean_stale_in
from torchslim.models import create_model
from torchslim.training import TrainConfig, fit


def test_clean_stale_in_removes_only_torchslim_temporaries(tmp_path: Path):
    (tmp_path / ".best.safetensors.torchslim-ab12.tmp").write_bytes(b"half")
    (tmp_path / ".out.torchslim-cd34.tmp").mkdir()
    (tmp_path / ".out.torchslim-cd34.tmp" / "model.safetensors").write_bytes(b"half")
    keep = [tmp_path / "best.safetensors", tmp_path / ".hidden", tmp_path / "x.tmp", tmp_path / ".a.tmp"]
    for k in keep:
        k.write_bytes(b"user")
    removed = clean_stale_in(tmp_path)
    assert sorted(p.name for p in removed) == [".best.safetensors.torchslim-ab12.tmp", ".out.torchslim-cd34.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(k.name for k in keep)
    assert clean_stale_in(tmp_path / "missing") == []


def test_fit_clears_a_killed_runs_temporaries(tmp_path: Path):
    stale = tmp_path / ".best.safetensors.torchslim-zz99.tmp"
    stale.write_bytes(b"left by SIGKILL")
    data = load_dataset("digits", "train").subset(64), load_dataset("digits", "val").subset(32)
    fit(create_model("lenet300"), TrainConfig(epochs=1, batch_size=32, max_steps=2), *data, run_dir=tmp_path, quiet=True)
    assert not stale.exists()
    assert not list(tmp_path.glob("*.tmp")) and (tmp_path / "last.safetensors").is_file()


def test_train_epochs_0_is_refused(tmp_path: Path, capsys):
    rc = main(["--threads", "1", "train", "--model", "lenet300", "--data", "digits", "--epochs", "0",
               "--out", str(tmp_path / "t.safetensors")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("torchslim: error: --epochs 0 trains nothing and would write an untrained model; "
                               "give 1 or more (or leave it out)")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", [["--lr", "nan"], ["--seed", "100000000000000000000"], ["--batch-size", "100000000000"]])
def test_train_numbers_out_of_range_are_one_line(tmp_path: Path, capsys, flag: list[str]):
    rc = main(["--threads", "1", "train", "--model", "lenet300", "--data", "digits", *flag,
               "--out", str(tmp_path / "t.safetensors")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("torchslim: error: TrainConfig: ")


@pytest.mark.parametrize("verb", ["train", "finetune"])
def test_resume_without_a_run_dir_is_refused(tmp_path: Path, capsys, verb: str):
    src = ["--model", "lenet300"] if verb == "train" else [str(tmp_path / "m.safetensors")]
    if verb == "finetune":
        from torchslim.checkpoint import save_checkpoint

        save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    rc = main(["--threads", "1", verb, *src, "--data", "digits", "--resume", "--out", str(tmp_path / "t.safetensors")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("torchslim: error: --resume continues from RUN_DIR/last.safetensors: give the run's "
                               "folder with --run-dir")  # fmt: skip
    assert not (tmp_path / "t.safetensors").exists()
