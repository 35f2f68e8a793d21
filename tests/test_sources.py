"""The model and data sources the CLI and recipes name: factories, image folders, sentences files."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from torchslim.errors import CheckpointError, ConfigError, DataError
from torchslim.sources import read_sentences, resolve_data, resolve_model

FACTORY = """
import torch, torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 3, 20, 20, generator=g)
    dl = DataLoader(TensorDataset(x, torch.randint(0, 5, (96,), generator=g)), batch_size=16)
    return {"train": dl, "val": dl, "test": dl}
def broken():
    raise RuntimeError("no GPU")
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "usermodels.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_factory_model_and_file_factory(user_dir):
    m, meta = resolve_model("usermodels:net")
    assert m[-1].out_features == 5 and meta == {"factory": "usermodels:net"}
    m2, _ = resolve_model(str(user_dir / "usermodels.py") + ":net")
    assert torch.equal(m2[0].weight, m[0].weight)


def test_factory_errors_are_typed(user_dir):
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        resolve_model("usermodels:nope")
    with pytest.raises(ConfigError, match="calling it raised RuntimeError: no GPU"):
        resolve_model("usermodels:broken")
    with pytest.raises(ConfigError, match="returned dict, not a torch.nn.Module"):
        resolve_model("usermodels:loaders")
    with pytest.raises(ConfigError, match="cannot import no_such_pkg"):
        resolve_model("no_such_pkg.mod:net")
    (user_dir / "old.pt").write_bytes(b"\x80\x02junk")
    with pytest.raises(CheckpointError, match="pickle file, which torchslim does not load"):
        resolve_model("old.pt")


def test_data_factory_splits(user_dir):
    assert len(resolve_data("usermodels:loaders", "val")) == 6
    with pytest.raises(ConfigError, match="is not a built-in data set"):
        resolve_data("nowhere", "train")


def _png_tree(root: Path, per_class: int, split_dirs: bool) -> None:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val", "test") if split_dirs else ("",):
        for c in ("boot", "shirt"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                px = (torch.rand(12, 12, generator=g) * 255).byte().numpy()
                Image.fromarray(px, mode="L").save(d / f"{i}.png")


def test_image_folder_split_80_10_10(tmp_path):
    _png_tree(tmp_path, 20, split_dirs=False)
    sizes = {s: len(resolve_data(str(tmp_path), s).dataset) for s in ("train", "val", "test")}
    assert sizes == {"train": 32, "val": 4, "test": 4}
    x, y = next(iter(resolve_data(str(tmp_path), "test")))
    assert x.shape == (4, 1, 12, 12) and set(y.tolist()) <= {0, 1}


def test_image_folder_with_split_dirs_and_errors(tmp_path):
    _png_tree(tmp_path / "a", 3, split_dirs=True)
    assert len(resolve_data(str(tmp_path / "a"), "val").dataset) == 6
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        resolve_data(str(tmp_path / "empty"), "train")


def test_sentences_file_errors(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_sentences(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="holds no sentences"):
        read_sentences(tmp_path / "empty.txt")
    (tmp_path / "ok.txt").write_text("one\n\ntwo\n")
    assert read_sentences(tmp_path / "ok.txt") == ["one", "two"]
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        resolve_data(str(tmp_path / "ok.txt"), "train")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchslim.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.mark.slow
def test_cli_factory_model_and_data_round_trip(user_dir):
    r = _cli("quantize", "usermodels:net", "--method", "int8-static", "--data", "usermodels:loaders", "--out", "s.safetensors",
             cwd=user_dir)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _cli("eval", "usermodels:net@s.safetensors", "--data", "usermodels:loaders", "--runs", "2", "--json", "e.json",
             cwd=user_dir)  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    res = json.loads((user_dir / "e.json").read_text())
    assert res["samples"] == 96 and res["latency_runtime"] == "compile_int8" and 0 <= res["accuracy"] <= 100
    r = _cli("eval", "usermodels:net", "--data", "fashion-mnist", "--runs", "2", cwd=user_dir)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "expected input[64, 1, 28, 28] to have 3 channels" in r.stderr
