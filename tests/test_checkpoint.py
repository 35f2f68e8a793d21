import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from torchslim.checkpoint import load_checkpoint, load_weights, read_checkpoint, save_checkpoint
from torchslim.errors import CheckpointError
from torchslim.models import create_model


def test_round_trip_identical_outputs(tmp_path: Path):
    m = create_model("resnet8").eval()
    p = save_checkpoint(m, tmp_path / "m.safetensors", architecture="resnet8", meta={"note": "x"})
    m2, meta = load_checkpoint(p)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(m(x), m2(x))
    assert meta["note"] == "x" and meta["structure"] == []
    sidecar = json.loads(p.with_suffix(".json").read_text())
    assert sidecar["architecture"]["name"] == "resnet8" and "torch" in sidecar["versions"]
    assert not p.read_bytes().startswith(b"\x80")  # not a pickle


def test_changed_shapes_are_rebuilt(tmp_path: Path):
    m = create_model("lenet300").eval()
    m.fc1 = nn.Linear(784, 120)  # a structurally pruned layer...
    m.fc2 = nn.Linear(120, 100)  # ...and its coupled consumer
    p = save_checkpoint(m, tmp_path / "m.safetensors", architecture="lenet300")
    m2, meta = load_checkpoint(p)
    assert {s["name"] for s in meta["structure"]} == {"fc1", "fc2"}
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(m(x), m2(x))


def test_sparse_tensors_are_stored_compactly(tmp_path: Path):
    m = create_model("lenet300").eval()
    dense = save_checkpoint(m, tmp_path / "dense.safetensors", architecture="lenet300").stat().st_size
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                thr = p.abs().flatten().kthvalue(int(0.9 * p.numel())).values
                p[p.abs() <= thr] = 0
    path = save_checkpoint(m, tmp_path / "sparse.safetensors", architecture="lenet300")
    assert path.stat().st_size < 0.2 * dense  # 10% non-zeros + 1 bit per weight
    m2, _ = load_checkpoint(path)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(m(x), m2(x))


def test_wrong_architecture_names_the_tensors(tmp_path: Path):
    p = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"missing: conv1.weight.*unexpected: fc3.bias, fc3.weight; shape mismatch: fc1.weight \(checkpoint \(300, 784\), model \(500, 800\)\)"):
        load_weights(create_model("lenet5"), p)


def test_truncated_file(tmp_path: Path):
    p = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(p)


def test_plain_safetensors_is_not_a_torchslim_checkpoint(tmp_path: Path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="not a torchslim checkpoint"):
        load_checkpoint(tmp_path / "x.safetensors")


def test_load_into_user_model_does_not_modify_it(tmp_path: Path):
    user = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    trained = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    p = save_checkpoint(trained, tmp_path / "u.safetensors")
    before = user[1].weight.clone()
    loaded, _ = load_checkpoint(p, model=user)
    assert torch.equal(user[1].weight, before)
    assert torch.equal(loaded[1].weight, trained[1].weight)


class _Scale(nn.Module):
    """A layer kind torchslim has no codec for; ``n`` is the constructor argument behind its shape."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.w = nn.Parameter(torch.randn(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w.view(1, self.n)


def _scaled_mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, hidden), _Scale(hidden), nn.Linear(hidden, 3))


def test_unknown_layer_with_changed_constructor_args_is_a_typed_error(tmp_path: Path):
    from torchslim.checkpoint import structure_of

    pruned = _scaled_mlp(4)  # as if structured pruning shrank the hidden layer from 8 to 4
    with pytest.raises(CheckpointError, match=r"layer 1 \(_Scale\) has resized tensors and changed attributes \['n'\].*register_codec"):
        structure_of(pruned, _scaled_mlp(8))
    path = save_checkpoint(pruned, tmp_path / "s.safetensors")  # no reference: the check runs on load
    with pytest.raises(CheckpointError, match=r"layer 1 \(_Scale\) was saved with resized tensors \['w'\] and attributes \['n'\]"):
        load_checkpoint(path, model=_scaled_mlp(8))


def test_unknown_layer_replacing_an_architecture_layer_is_a_typed_error(tmp_path: Path):
    m = create_model("lenet300")
    m.fc2 = nn.Sequential(_Scale(300), nn.Linear(300, 100))
    with pytest.raises(CheckpointError, match=r"layer fc2 \(Sequential\) replaces the architecture's Linear"):
        save_checkpoint(m, tmp_path / "m.safetensors", architecture="lenet300")
    assert not (tmp_path / "m.safetensors").exists()


class _Gain(nn.Module):
    """A layer scale: its forward reads its size from the parameter alone."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.w = nn.Parameter(torch.randn(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def test_unknown_layer_with_only_resized_parameters_reloads(tmp_path: Path):
    # Torch-Pruning resizes parameters of layers it does not know without touching their attributes.
    m = nn.Sequential(nn.Linear(6, 4), _Gain(8))
    m[1].w = nn.Parameter(torch.randn(4))
    back, meta = load_checkpoint(save_checkpoint(m, tmp_path / "u.safetensors"), model=nn.Sequential(nn.Linear(6, 8), _Gain(8)))
    assert {"name": "1", "kind": "tensor_shapes", "shapes": {"w": [4]}, "attrs": {"n": 8}} in meta["structure"]
    x = torch.randn(2, 6)
    assert torch.equal(back(x), m(x))


def test_non_tensor_state_without_codec_is_a_typed_error(tmp_path: Path):
    class WithExtra(nn.Linear):
        def get_extra_state(self) -> dict:
            return {"calibrated": True}

        def set_extra_state(self, state: dict) -> None:
            pass

    m = nn.Sequential(nn.Linear(4, 4), WithExtra(4, 2))
    with pytest.raises(CheckpointError, match=r"layer 1 \(WithExtra\) holds '1._extra_state', a dict rather than a tensor"):
        save_checkpoint(m, tmp_path / "x.safetensors")


def _rewrite_header(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["torchslim"])
    edit(meta)
    save_file(load_file(str(path)), str(path), metadata={"torchslim": json.dumps(meta)})


def test_header_that_lies_about_shapes_is_refused_before_allocating(tmp_path: Path):
    import tracemalloc

    from torchslim.quantization import DynamicInt8Config, quantize

    q, _ = quantize(create_model("lenet300"), DynamicInt8Config())
    path = save_checkpoint(q, tmp_path / "q.safetensors", architecture="lenet300")

    def huge(meta):
        fc1 = next(s for s in meta["structure"] if s["name"] == "fc1")
        fc1["config"].update(in_features=20000, out_features=20000)

    _rewrite_header(path, huge)
    tracemalloc.start()
    with pytest.raises(CheckpointError, match=r"gives fc1.weight_int8 the shape \[20000, 20000\] but the file's tensor is \[300, 784\]"):
        load_checkpoint(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20  # a 400 MB int8 weight was never allocated

    pruned = torch.nn.Linear(64, 16)

    def bigger_mask_shape(meta):
        for enc in meta["encodings"].values():
            enc["shape"] = [100000, 100000]

    with torch.no_grad():
        pruned.weight[:, :48] = 0  # sparse enough to be stored as a bitmask
    p2 = save_checkpoint(nn.Sequential(pruned), tmp_path / "s.safetensors", sparse=True)
    _, meta = read_checkpoint(p2)
    assert meta["encodings"]  # stored sparse
    _rewrite_header(p2, bigger_mask_shape)
    with pytest.raises(CheckpointError, match="needs 10000000000 mask bits, the file holds"):
        read_checkpoint(p2)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version="abc"), "field 'format_version' is invalid"),
        (lambda m: m.update(architecture=["lenet300"]), "field 'architecture' is invalid"),
        (lambda m: m["structure"].append({"name": "fc1"}), "field 'structure.0.kind' is invalid"),
        (lambda m: m.update(format="other"), "is not a torchslim checkpoint"),
        (lambda m: m.update(format_version=99), "has format v99"),
        (lambda m: m["architecture"]["config"].update(num_classes=-5), "cannot be built with config"),
    ],
)
def test_header_fields_are_validated_before_use(tmp_path: Path, edit, message):
    path = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    _rewrite_header(path, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_header_that_is_not_json_is_a_checkpoint_error(tmp_path: Path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"), metadata={"torchslim": "{not json"})
    with pytest.raises(CheckpointError, match="metadata is not JSON"):
        load_checkpoint(tmp_path / "x.safetensors")
