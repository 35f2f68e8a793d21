import pytest
import torch

from torchslim.checkpoint import load_checkpoint, save_checkpoint
from torchslim.compression import DeepCompressionConfig, deep_compress, saved_bytes
from torchslim.data import load_dataset
from torchslim.measure import accuracy
from torchslim.models import create_model
from torchslim.training import TrainConfig, fit


@pytest.fixture(scope="module")
def trained_lenet300():
    torch.manual_seed(0)
    m = create_model("lenet300")
    fit(m, TrainConfig(epochs=4, lr=0.05, batch_size=64), load_dataset("digits", "train"),
        load_dataset("digits", "val"), quiet=True)
    return m


@pytest.mark.slow
def test_three_stages_shrink_the_file_and_keep_accuracy(trained_lenet300, tmp_path):
    test = load_dataset("digits", "test")
    base_acc = accuracy(trained_lenet300, test)
    cfg = DeepCompressionConfig(
        dataset="digits",
        prune={"keep": {"fc1": 0.1, "fc2": 0.15, "fc3": 0.5}, "prune_epochs": 2, "prune_frequency": 5,
               "train": {"epochs": 2, "lr": 0.02, "batch_size": 64}},
        share={"bits": 4, "bias_bits": 4}, share_train={"epochs": 1, "lr": 0.001, "batch_size": 64},
        code={"index_bits": "auto"},
    )
    r = deep_compress(trained_lenet300, cfg, quiet=True)
    sizes = {s.name: saved_bytes(s.model, "lenet300") for s in r.stages}
    fp32 = saved_bytes(trained_lenet300, "lenet300")
    assert sizes["pruned"] < fp32 / 5
    assert sizes["shared"] < sizes["pruned"] / 2
    assert sizes["coded"] < sizes["shared"]
    assert fp32 / sizes["coded"] > 30
    assert accuracy(r.model, test) > base_acc - 5.0
    path = save_checkpoint(r.model, tmp_path / "dc.safetensors", architecture="lenet300")
    back, _ = load_checkpoint(path)
    with torch.no_grad():
        assert torch.equal(back(test.images), r.model(test.images))
    total = r.table[-1]
    assert total["layer"] == "total" and total["kept_pct"] == pytest.approx(100 * (23520 + 4500 + 500) / 266200, abs=0.01)


def test_model_argument_is_not_modified(trained_lenet300):
    before = {k: v.clone() for k, v in trained_lenet300.state_dict().items()}
    cfg = DeepCompressionConfig(share_train=None, prune={"default_keep": 0.3, "schedule": "one-shot",
                                                          "train": {"epochs": 0}})
    r = deep_compress(trained_lenet300, cfg)
    assert all(torch.equal(v, trained_lenet300.state_dict()[k]) for k, v in before.items())
    assert [s.name for s in r.stages] == ["pruned", "shared", "coded"]
