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


# ----------------------------------------------------------------------------- grouped channels, attention
class _Grouped(nn.Module):
    """A RegNet-style block: 1x1, grouped 3x3 (groups=4), 1x1, with a residual add."""

    def __init__(self, norm_groups: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.a = nn.Conv2d(32, 24, 1)
        self.norm = nn.GroupNorm(norm_groups, 24)
        self.b = nn.Conv2d(24, 24, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(24)
        self.c = nn.Conv2d(24, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.c(torch.relu(self.bn(self.b(torch.relu(self.norm(self.a(x)))))))
        return self.fc(torch.relu(x + y).mean((2, 3)))


def test_grouped_convolution_loses_the_same_positions_in_every_group():
    torch.manual_seed(0)
    model = _Grouped().eval()
    pruned, report = prune(model, StructuredConfig(ratio=0.5, input_shape=[3, 16, 16]))
    b = pruned.b
    assert (b.in_channels, b.out_channels, b.groups) == (12, 12, 4) and b.weight.shape == (12, 3, 3, 3)
    # each group of 6 input channels kept the same 3 positions, so b's kept weights are the originals
    kept = [i for i in range(24) if bool((pruned.a.bias == model.a.bias[i]).any())]  # a's inputs shrink too: match biases
    local = torch.tensor(kept).view(4, 3) % 6
    assert (local == local[0]).all()
    x = torch.randn(2, 3, 16, 16)
    assert pruned(x).shape == (2, 10)
    assert report.summary["mac_reduction"] > 1.5 and count_macs(pruned, x[:1]) < count_macs(model, x[:1])


def test_incompatible_channel_groups_error_advice_works():
    from torchslim.errors import CompatibilityError

    model = _Grouped(norm_groups=3).eval()  # 3 GroupNorm groups and 4 conv groups share a's channels
    cfg = StructuredConfig(ratio=0.5, input_shape=[3, 16, 16])
    with pytest.raises(CompatibilityError, match=r"split into \[3, 4\] groups .* targets=\{'a': None\}") as info:
        prune(model, cfg)
    assert "targets={'a': None}" in str(info.value)
    pruned, report = prune(model, cfg, targets={"a": None})  # the advice, followed
    x = torch.randn(2, 3, 16, 16)
    assert pruned(x).shape == (2, 10) and pruned.a.out_channels == 24 and pruned.b.out_channels == 12
    assert count_macs(pruned, x[:1]) < count_macs(model, x[:1])


def _mha_net() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(16, 32)
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.norm = nn.LayerNorm(32)
            self.head = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            a, _ = self.attn(h, h, h, need_weights=False)
            return self.head(self.norm(h + a).mean(1))

    torch.manual_seed(0)
    return Net().eval()


def test_attention_heads_keep_their_width_equal():
    model = _mha_net()
    # 0.3 x 32 = 9 channels would leave 23, which 4 heads cannot share; per head 2 of 8 go
    pruned, report = prune(model, StructuredConfig(ratio=0.3, input_shape=[8, 16]))
    attn = pruned.attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (24, 4, 6)
    kept = [i for i in range(32) if any(torch.equal(model.embed.weight[i], w) for w in pruned.embed.weight)]
    local = torch.tensor(kept).view(4, 6) % 8
    assert (local == local[0]).all()  # the same positions in every head
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)
    assert report.summary["channels_removed"] == 8 and report.summary["mac_reduction"] > 1.2


def test_transformer_encoder_prunes_hidden_and_mlp_dims():
    class Enc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(16, 32)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0), 2)
            self.head = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.enc(self.embed(x)).mean(1))

    torch.manual_seed(0)
    model = Enc().eval()
    pruned, report = prune(model, StructuredConfig(ratio=0.3, input_shape=[8, 16]))
    layer = pruned.enc.layers[1]
    assert layer.self_attn.embed_dim == 24 and layer.linear1.out_features == 45
    x = torch.randn(2, 8, 16)
    with torch.no_grad():  # eval + no_grad takes torch's fused encoder kernel on the pruned weights
        assert pruned(x).shape == (2, 10)
    assert _unfused_macs(pruned, x[:1]) < _unfused_macs(model, x[:1]) / 1.5


def _unfused_macs(model: nn.Module, x: torch.Tensor) -> int:
    # FlopCounterMode has no formula for torch's fused attention / encoder kernels (count_macs runs
    # under inference_mode, which selects them), so count on the unfused path.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return count_macs(model, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def _small_vit() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()


def test_vit_hidden_width_error_names_the_group_and_its_advice_works():
    from torchslim.errors import CompatibilityError

    model = _small_vit()
    cfg = StructuredConfig(ratio=0.3, input_shape=[3, 32, 32])
    with pytest.raises(CompatibilityError, match=r"coupled with .*conv_proj.* breaks the model's forward") as info:
        prune(model, cfg)  # torchvision's ViT reshapes to self.hidden_dim, a plain int
    advice = str(info.value).split("targets=")[1].split(";")[0]
    root = advice.strip("{}").split(":")[0].strip("'")
    assert advice == f"{{'{root}': None}}" and root in dict(model.named_modules())
    pruned, report = prune(model, cfg, targets={root: None})  # the advice, followed: the MLP widths go
    x = torch.randn(2, 3, 32, 32)
    assert pruned(x).shape == (2, 10)
    mlp = pruned.encoder.layers[0].mlp
    assert mlp[0].out_features == mlp[3].in_features == 45 and pruned.conv_proj.out_channels == 32
    assert _unfused_macs(pruned, x[:1]) < _unfused_macs(model, x[:1]) * 0.9
    assert report.summary["groups_pruned"] == 2


@pytest.mark.slow
def test_regnet_grouped_convolutions_prune():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.regnet_x_400mf(weights=None).eval()
    pruned, report = prune(model, StructuredConfig(ratio=0.3, input_shape=[3, 64, 64]))
    x = torch.randn(1, 3, 64, 64)
    assert pruned(x).shape == (1, 1000)
    grouped = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert grouped and all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in grouped)
    assert count_macs(pruned, x) < count_macs(model, x) / 1.5
    assert report.summary["mac_reduction"] > 1.5


def test_a_group_torch_pruning_cannot_follow_is_kept_whole_and_reported():
    """Torch-Pruning's index mapping fails on a GRU's input; the conv feeding it stays whole, others prune."""
    import torch.nn.functional as F

    class SeqNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(28, 32, 3, padding=1)
            self.conv2 = nn.Conv1d(32, 32, 3, padding=1)
            self.gru = nn.GRU(32, 64, batch_first=True)
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.gru(F.relu(self.conv2(F.relu(self.conv(x)))).transpose(1, 2))
            return self.head(out[:, -1])

    torch.manual_seed(0)
    pruned, report = prune(SeqNet(), StructuredConfig(ratio=0.3), calib_data=[torch.randn(8, 28, 28)])
    assert pruned.conv.out_channels == 23 and pruned.conv2.in_channels == 23 and pruned.conv2.out_channels == 32
    kept = [e.detail for e in report.layers if e.name == "conv2" and e.action == "skipped"]
    assert kept == ["Torch-Pruning cannot follow its channels through GRU (IndexError); kept whole"]
    assert pruned(torch.randn(2, 28, 28)).shape == (2, 10)


def _tiny_swin() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    # torchvision's own Swin code at toy size: at 16x16 the second stage sees 2x2 tokens in one
    # padded 7x7 window, as swin_t's last stage does at 64x64.
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=32, depths=[1, 1], num_heads=[2, 4], window_size=[7, 7],
        stochastic_depth_prob=0.0, num_classes=10,
    ).eval()  # fmt: skip


def test_swin_window_attention_refused_before_work_with_advice_that_works():
    """Torch-Pruning models Swin's window attention wrongly. The last stage's residual group maps its
    indices around a reshape cycle, growing without end (swin_t: a raw MemoryError after minutes):
    kept whole and reported. The first stage's maps 32 channels onto the 2 heads of the relative
    position bias table, which a 30% cut would empty: refused before any channel goes, naming it."""
    from torchslim.errors import CompatibilityError

    model = _tiny_swin()
    cfg = StructuredConfig(ratio=0.3, input_shape=[3, 16, 16])
    with pytest.raises(CompatibilityError, match=r"9 of 32 channels of layer features\.1\.0\.mlp\.3 map to all 2 output "
                       r"channels of features\.1\.0\.attn\.relative_position_bias_table") as info:  # fmt: skip
        prune(model, cfg)
    advice = str(info.value).split("targets=")[1].split(";")[0]
    assert advice == "{'features.1.0.mlp.3': None}"
    pruned, report = prune(model, cfg, targets={"features.1.0.mlp.3": None})  # the advice, followed
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)
    mlp1, mlp2 = pruned.features[1][0].mlp, pruned.features[3][0].mlp  # both MLP hidden widths lose 30%
    assert (mlp1[0].out_features, mlp1[3].in_features, mlp2[0].out_features, mlp2[3].in_features) == (90, 90, 180, 180)
    assert pruned.features[2].reduction.out_features == 64 and pruned.features[1][0].attn.qkv.in_features == 32
    kept = {e.name: e.detail for e in report.skipped}
    assert set(kept) == {"head", "features.1.0.mlp.3", "features.2.reduction", "features.3.0.mlp.3"}
    assert "index mapping grows without end" in kept["features.2.reduction"]
    assert report.summary["channels_removed"] == 38 + 76
    assert count_macs(pruned, x[:1]) == report.summary["macs_after"] < report.summary["macs_before"] == count_macs(model, x[:1])
