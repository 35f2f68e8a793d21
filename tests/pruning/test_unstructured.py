import copy

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.nn.utils import prune as torch_prune

from torchslim.models import create_model
from torchslim.pruning import (
    MagnitudeConfig,
    NMConfig,
    RandomConfig,
    TaylorConfig,
    WandaConfig,
    global_unstructured,
    nm_mask,
    prune,
)


def _zeros(m: nn.Module) -> int:
    return int((m.weight == 0).sum())


@pytest.mark.parametrize("amount", [0.3, 0.9, 0.92])
def test_layer_scope_gives_exact_sparsity_per_layer(amount):
    model = create_model("lenet300")
    pruned, report = prune(model, MagnitudeConfig(amount=amount))
    for name in ("fc1", "fc2", "fc3"):
        m = pruned.get_submodule(name)
        assert _zeros(m) == round(amount * m.weight.numel())
        # the pruned ones are the smallest: every kept |w| >= every removed |w|
        w = m.weight_orig.detach().abs()
        assert w[m.weight_mask.bool()].min() >= w[~m.weight_mask.bool()].max()
    assert {e.name for e in report.layers if e.action == "pruned"} == {"fc1", "fc2", "fc3"}
    assert report.layers[0].before["sparsity"] == 0.0
    assert report.layers[0].after["sparsity"] == pytest.approx(amount, abs=1e-4)
    # the input model is untouched
    assert not hasattr(model.fc1, "weight_mask") and _zeros(model.fc1) == 0


def test_per_layer_amounts_from_targets_deep_compression_ratios():
    targets = {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}
    pruned, _ = prune(create_model("lenet300"), MagnitudeConfig(amount=0.5), targets=targets)
    for name, a in targets.items():
        m = pruned.get_submodule(name)
        assert _zeros(m) == round(a * m.weight.numel())


def test_global_scope_exact_total_and_uneven_layers():
    torch.manual_seed(0)
    model = create_model("lenet300")
    with torch.no_grad():
        model.fc3.weight.mul_(10.0)  # large weights survive global ranking
    pruned, report = prune(model, MagnitudeConfig(amount=0.8, scope="global"))
    total = sum(pruned.get_submodule(n).weight.numel() for n in ("fc1", "fc2", "fc3"))
    zeros = sum(_zeros(pruned.get_submodule(n)) for n in ("fc1", "fc2", "fc3"))
    assert zeros == round(0.8 * total)
    assert _zeros(pruned.fc3) / pruned.fc3.weight.numel() < 0.2
    assert report.summary["targeted_sparsity_after"] == pytest.approx(0.8, abs=1e-5)


def test_integer_amount_counts_weights():
    pruned, _ = prune(create_model("lenet300"), MagnitudeConfig(amount=100), targets=["fc3"])
    assert _zeros(pruned.fc3) == 100 and _zeros(pruned.fc1) == 0


@pytest.mark.slow
def test_seed_global_unstructured_call_matches_torch_on_resnet50():
    torch.manual_seed(0)
    ref = torchvision.models.resnet50()
    ours = copy.deepcopy(ref)
    compat = copy.deepcopy(ref)

    def params(m):
        return [(m.layer1[0].conv1, "weight"), (m.layer1[0].conv2, "weight"), (m.layer1[0].conv3, "weight")]

    torch_prune.global_unstructured(params(ref), pruning_method=torch_prune.L1Unstructured, amount=0.2)
    report = global_unstructured(params(compat), pruning_method=torch_prune.L1Unstructured, amount=0.2, model=compat)
    names = ["layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3"]
    pruned, _ = prune(ours, MagnitudeConfig(amount=0.2, scope="global"), targets=names)
    for n in names:
        expected = ref.get_submodule(n).weight_mask
        assert torch.equal(compat.get_submodule(n).weight_mask, expected)
        assert torch.equal(pruned.get_submodule(n).weight_mask, expected)
        assert torch.equal(pruned.get_submodule(n).weight, ref.get_submodule(n).weight)
    assert [e.name for e in report.layers] == [n + ".weight" for n in names]
    assert report.summary["sparsity_after"] == pytest.approx(0.2, abs=1e-4)


def test_random_is_exact_seeded_and_differs_from_magnitude():
    model = create_model("lenet300")
    a, _ = prune(model, RandomConfig(amount=0.5, seed=1))
    b, _ = prune(model, RandomConfig(amount=0.5, seed=1))
    c, _ = prune(model, MagnitudeConfig(amount=0.5))
    assert torch.equal(a.fc1.weight_mask, b.fc1.weight_mask)
    assert _zeros(a.fc1) == round(0.5 * a.fc1.weight.numel())
    overlap = float((a.fc1.weight_mask == c.fc1.weight_mask).float().mean())
    assert 0.4 < overlap < 0.6  # independent of magnitude: about half agree by chance


def test_wanda_weights_magnitude_by_input_norm():
    lin = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]))
    x = torch.ones(16, 4)
    x[:, 0] = 100.0  # feature 0 is large, so its small weight matters most
    pruned, _ = prune(lin, WandaConfig(amount=0.5), calib_data=x)
    assert pruned[0].weight_mask.tolist() == [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    mag, _ = prune(lin, MagnitudeConfig(amount=0.5))
    assert mag[0].weight_mask.tolist() != pruned[0].weight_mask.tolist()


def test_wanda_per_output_row_sparsity_on_conv(digits):
    train, _, _ = digits
    pruned, report = prune(create_model("lenet5"), WandaConfig(amount=0.6, calib_samples=64), calib_data=train)
    rows = pruned.conv2.weight.reshape(50, -1)
    assert ((rows == 0).sum(1) == round(0.6 * rows.shape[1])).all()
    assert report.summary["macs_before"] == 2293000


def test_taylor_needs_labels_and_gives_exact_sparsity(digits):
    train, _, _ = digits
    pruned, _ = prune(create_model("lenet300"), TaylorConfig(amount=0.7, calib_samples=128), calib_data=train)
    assert _zeros(pruned.fc2) == round(0.7 * pruned.fc2.weight.numel())
    from torchslim.errors import DataError

    with pytest.raises(DataError, match="labelled"):
        prune(create_model("lenet300"), TaylorConfig(amount=0.7), calib_data=train.images[:32])


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_nm_pattern_holds_in_every_group(n, m):
    model = create_model("lenet5")
    pruned, report = prune(model, NMConfig(n=n, m=m))
    skipped = {e.name: e.detail for e in report.skipped}
    for name in ("conv2", "fc1", "fc2"):
        w = pruned.get_submodule(name).weight.detach()
        if w.shape[1] % m:  # conv2 has 20 input channels: no 4:8 groups
            assert name in skipped and w.ne(0).all()
            continue
        perm = [0, *range(2, w.dim()), 1]
        groups = w.permute(perm).reshape(-1, m)
        assert ((groups != 0).sum(1) == n).all(), name
        # the kept ones are the largest of each group
        kept = groups.abs().where(groups != 0, torch.tensor(float("inf"))).min(1).values
        dropped = groups.abs().where(groups == 0, torch.tensor(-1.0)).max(1).values
        assert (kept >= dropped).all()
    assert "conv1" in skipped and "not a multiple" in skipped["conv1"]  # 1 input channel
    assert pruned.conv1.weight.ne(0).all()


def test_nm_mask_example_and_conv_layout():
    w = torch.arange(1.0, 9.0).reshape(1, 8, 1, 1)  # 8 input channels of one 1x1 filter
    mask = nm_mask(w, 2, 4)
    assert mask.flatten().tolist() == [0, 0, 1, 1, 0, 0, 1, 1]


def test_pruning_a_pruned_model_only_grows_masks():
    first, _ = prune(create_model("lenet300"), MagnitudeConfig(amount=0.5))
    first(torch.zeros(1, 1, 28, 28))  # a forward leaves a non-leaf weight; copying must still work
    second, report = prune(first, MagnitudeConfig(amount=0.8))
    assert (second.fc1.weight_mask <= first.fc1.weight_mask).all()
    assert _zeros(second.fc1) == round(0.8 * second.fc1.weight.numel())
    assert report.layers[0].before["sparsity"] == pytest.approx(0.5, abs=1e-4)


def test_activation_aware_pruning_reads_any_data_protocol_source():
    """Wanda and Taylor take a DataLoader of (inputs, labels) and dict batches like every verb."""
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from torchslim.pruning import TaylorConfig, WandaConfig, prune

    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)

        def forward(self, batch: dict) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(batch["x"])))

    torch.manual_seed(0)
    x, y = torch.randn(40, 12), torch.randint(0, 3, (40,))
    model = DictNet()
    dicts = [{"x": x[i : i + 8], "labels": y[i : i + 8]} for i in range(0, 40, 8)]
    for cfg in (WandaConfig(amount=0.5), TaylorConfig(amount=0.5)):
        pruned, report = prune(model, cfg, calib_data=dicts)
        assert round(report.summary["targeted_sparsity_after"], 2) == 0.5
    seq = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    pruned, report = prune(seq, WandaConfig(amount=0.25), calib_data=loader)
    assert round(report.summary["targeted_sparsity_after"], 2) == 0.25
