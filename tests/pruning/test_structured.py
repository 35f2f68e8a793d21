import pytest
import torch
import torch.nn as nn

from torchslim.measure import count_macs
from torchslim.models import create_model
from torchslim.pruning import StructuredConfig, prune

from .conftest import Branchy


def test_resnet8_channels_removed_with_coupled_layers(digits):
    train, _, _ = digits
    model = create_model("resnet8").eval()
    pruned, report = prune(model, StructuredConfig(ratio=0.5, round_to=4), calib_data=train)
    x = train.images[:8]
    assert pruned(x).shape == (8, 10)
    # residual stages stay consistent: the shortcut, the block output and the BN shrink together
    b = pruned.layer2[0]
    assert b.conv2.out_channels == b.shortcut[0].out_channels == b.bn2.num_features == 16
    assert pruned.layer3[0].conv1.in_channels == 16
    assert pruned.fc.in_features == 32 and pruned.fc.out_features == 10
    assert all(m.out_channels % 4 == 0 for m in pruned.modules() if isinstance(m, nn.Conv2d))
    before, after = count_macs(model, x[:1]), count_macs(pruned, x[:1])
    assert report.summary["macs_before"] == before and report.summary["macs_after"] == after
    assert before / after > 3.5  # half the channels on both sides of most convolutions
    entry = next(e for e in report.layers if e.name == "layer1.0.conv1")
    assert entry.before["out_channels"] == 16 and entry.after["out_channels"] == 8
    assert entry.after["macs"] * 4 == entry.before["macs"]
    assert "removed 8 output / 8 input channels" in entry.detail
    assert [e.name for e in report.skipped] == ["fc"]
    assert model.conv1.out_channels == 16  # the input model is untouched


def test_frozen_parameters_are_traced_and_stay_frozen(digits):
    train, _, _ = digits
    model = create_model("resnet8").eval()
    for p in model.parameters():
        p.requires_grad_(False)  # e.g. the baseline after serving as a distillation teacher
    pruned, report = prune(model, StructuredConfig(ratio=0.5), calib_data=train)
    assert report.summary["groups_pruned"] == 6
    assert not any(p.requires_grad for p in pruned.parameters())


def test_depthwise_concat_residual_coupling():
    model = Branchy().eval()
    pruned, report = prune(model, StructuredConfig(ratio=0.5, input_shape=[1, 12, 12]))
    assert pruned.stem.out_channels == pruned.dw.out_channels == pruned.dw.groups == pruned.bn.num_features == 8
    assert pruned.head.in_channels == pruned.a.out_channels + pruned.b.out_channels == 12
    assert pruned(torch.randn(2, 1, 12, 12)).shape == (2, 10)
    assert report.summary["mac_reduction"] > 2.0


def test_bn_scale_importance_keeps_the_largest_scales(digits):
    train, _, _ = digits
    model = create_model("resnet8").eval()
    with torch.no_grad():  # the stem and the first stage's residual branch form one coupled group
        for bn in (model.bn1, model.layer1[0].bn2):
            bn.weight.copy_(torch.linspace(0.1, 1.6, 16))
    pruned, _ = prune(model, StructuredConfig(ratio=0.5, importance="bn_scale"), calib_data=train)
    assert pruned.conv1.out_channels == 8
    assert torch.allclose(pruned.bn1.weight.detach().sort().values, torch.linspace(0.1, 1.6, 16)[8:])


@pytest.mark.parametrize("importance", ["l2", "taylor", "random"])
def test_other_importances(importance, digits):
    train, _, _ = digits
    model = create_model("lenet5")
    pruned, report = prune(model, StructuredConfig(ratio=0.5, importance=importance, calib_samples=64), calib_data=train)
    assert (pruned.conv1.out_channels, pruned.conv2.out_channels, pruned.fc1.out_features) == (10, 25, 250)
    kept = pruned.fc2.weight.detach()
    l1, _ = prune(model, StructuredConfig(ratio=0.5), calib_data=train)
    if importance == "random":
        assert not torch.equal(kept, l1.fc2.weight.detach())
    assert report.summary["importance"] == importance


def test_global_scope_ratio_over_all_groups(digits):
    train, _, _ = digits
    pruned, report = prune(create_model("resnet8"), StructuredConfig(ratio=0.4, scope="global"), calib_data=train)
    s = report.summary
    assert s["channels_removed"] == int(0.4 * s["channels_before"])
    assert pruned(train.images[:2]).shape == (2, 10)


def test_per_layer_ratio_and_exclusion(digits):
    train, _, _ = digits
    pruned, report = prune(create_model("lenet5"), StructuredConfig(ratio=0.5), targets={"conv1": None, "fc1": 0.8},
                           calib_data=train)
    assert pruned.conv1.out_channels == 20
    assert pruned.conv2.out_channels == 25
    assert pruned.fc1.out_features == 100 and pruned.fc2.in_features == 100
    assert {e.name: e.detail for e in report.skipped}["conv1"] == "excluded by targets"


def test_targeting_one_layer_of_a_coupled_group_is_explained(digits):
    from torchslim.errors import TargetError

    train, _, _ = digits
    with pytest.raises(TargetError, match="residual additions .* are pruned together"):
        prune(create_model("resnet8"), StructuredConfig(ratio=0.5), targets=["conv1"], calib_data=train)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tv/resnet18", "tv/mobilenet_v3_small", "tv/efficientnet_b0"])
def test_torchvision_models_prune_30_percent(name):
    model = create_model(name).eval()
    shape = [3, 64, 64]
    pruned, report = prune(model, StructuredConfig(ratio=0.3, round_to=8, input_shape=shape))
    x = torch.randn(2, *shape)
    assert pruned(x).shape == (2, 1000)
    assert report.summary["mac_reduction"] > 1.4
