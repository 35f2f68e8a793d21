import torch

from torchslim.checkpoint import load_checkpoint, save_checkpoint
from torchslim.models import create_model
from torchslim.pruning import (
    MagnitudeConfig,
    NMConfig,
    StructuredConfig,
    make_permanent,
    prune,
    pruned_parameters,
)


def test_make_permanent_removes_reparametrization():
    pruned, _ = prune(create_model("lenet300"), MagnitudeConfig(amount=0.5))
    assert pruned_parameters(pruned) == [("fc1", "weight"), ("fc2", "weight"), ("fc3", "weight")]
    plain = make_permanent(pruned)
    assert pruned_parameters(plain) == [] and pruned_parameters(pruned) != []  # copy by default
    assert sorted(plain.state_dict()) == sorted(create_model("lenet300").state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(plain(x), pruned(x))


def test_90_percent_sparse_checkpoint_is_smaller_and_reloads_identically(tmp_path):
    dense = create_model("lenet300")
    pruned, _ = prune(dense, MagnitudeConfig(amount=0.9, scope="global"))
    plain = make_permanent(pruned)
    p_dense = save_checkpoint(dense, tmp_path / "dense.safetensors", architecture="lenet300")
    p_sparse = save_checkpoint(plain, tmp_path / "sparse.safetensors", architecture="lenet300")
    size_dense, size_sparse = p_dense.stat().st_size, p_sparse.stat().st_size
    # 10% of float32 values + a 1-bit mask: about 0.1 + 1/32 of the dense bytes
    assert size_sparse < 0.16 * size_dense, (size_sparse, size_dense)
    loaded, meta = load_checkpoint(p_sparse)
    x = torch.randn(16, 1, 28, 28)
    assert torch.equal(loaded(x), plain.eval()(x))
    assert set(meta["encodings"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}


def test_nm_checkpoint_roundtrip(tmp_path):
    pruned, _ = prune(create_model("lenet5"), NMConfig(n=2, m=4))
    plain = make_permanent(pruned)
    p = save_checkpoint(plain, tmp_path / "nm.safetensors", architecture="lenet5")
    loaded, _ = load_checkpoint(p)
    assert torch.equal(loaded.fc1.weight, plain.fc1.weight)


def test_structured_model_rebuilds_from_checkpoint(tmp_path, digits):
    train, _, _ = digits
    model = create_model("resnet8")
    pruned, _ = prune(model, StructuredConfig(ratio=0.5, round_to=8), calib_data=train)
    p = save_checkpoint(pruned, tmp_path / "s.safetensors", architecture="resnet8")
    full = save_checkpoint(model, tmp_path / "full.safetensors", architecture="resnet8")
    loaded, meta = load_checkpoint(p)
    x = train.images[:16]
    assert torch.equal(loaded(x), pruned.eval()(x))
    assert loaded.layer3[0].conv2.out_channels == 32
    assert any(s["name"] == "layer3.0.conv2" for s in meta["structure"])
    assert p.stat().st_size < 0.35 * full.stat().st_size
    # the checkpoint holds no pickle: the file is safetensors + JSON only
    assert not p.read_bytes().startswith(b"\x80")


def test_pruned_models_deepcopy_after_training_steps(digits):
    import copy

    from torchslim.training import TrainConfig, fit

    train, val, _ = digits
    pruned, _ = prune(create_model("lenet300"), MagnitudeConfig(amount=0.5))
    copy.deepcopy(pruned)  # straight out of prune()
    fit(pruned, TrainConfig(epochs=1, batch_size=64, max_steps=3), train, val, quiet=True)
    x = train.images[:4]
    pruned.train()
    pruned(x).sum().backward()  # a forward with autograd on, as in the middle of training
    assert pruned.fc1.weight_orig.grad is not None
    twin = copy.deepcopy(pruned)
    assert torch.equal(twin.eval()(x), pruned.eval()(x))
    plain = make_permanent(pruned)
    assert not plain.fc1._forward_hooks
