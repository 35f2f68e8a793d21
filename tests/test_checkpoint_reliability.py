"""Issue 19: checkpoints whose metadata nests without end, or whose tensors have the wrong kind of
dtype, are CheckpointErrors (RecursionError and a silent int-to-float cast before)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

from torchslim.checkpoint import load_checkpoint, save_checkpoint
from torchslim.errors import CheckpointError
from torchslim.models import create_model


def _rewrite(path: Path, *, meta: str | None = None, tensors: dict | None = None) -> Path:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    t = load(raw)
    t.update(tensors or {})
    out = path.with_name("edited.safetensors")
    out.write_bytes(save(t, metadata={"torchslim": meta if meta is not None else header["__metadata__"]["torchslim"]}))
    return out


def test_metadata_nested_100000_deep_is_a_checkpoint_error(tmp_path: Path):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    deep = '{"format": "torchslim-checkpoint", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(CheckpointError, match="its torchslim metadata is not JSON .*the file is corrupt"):
        load_checkpoint(_rewrite(ck, meta=deep))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_boolean_data_for_a_float_weight_is_refused(tmp_path: Path, dtype: torch.dtype):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    bad = _rewrite(ck, tensors={"fc1.weight": torch.zeros(300, 784, dtype=dtype)})
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=rf"integer or boolean data for float tensors: fc1.weight \(checkpoint {name}, model float32\)"):
        load_checkpoint(bad)
    model, _ = load_checkpoint(ck)  # the untouched file still loads
    assert model.fc1.weight.dtype == torch.float32


def test_messages_say_what_to_do(tmp_path: Path):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    with pytest.raises(CheckpointError, match=r"missing: fc1.weight\); it belongs to another architecture or was edited: "
                                              r"load it into the model it was saved from"):  # fmt: skip
        load_checkpoint(_drop(ck, "fc1.weight"))
    (tmp_path / "t.safetensors").write_bytes(ck.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="it is truncated or corrupt: save or copy it again"):
        load_checkpoint(tmp_path / "t.safetensors")


def _drop(path: Path, name: str) -> Path:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    t = load(raw)
    t.pop(name)
    out = path.with_name("dropped.safetensors")
    out.write_bytes(save(t, metadata=json.loads(raw[8 : 8 + n])["__metadata__"]))
    return out
