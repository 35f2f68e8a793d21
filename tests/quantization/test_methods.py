import warnings

import pytest
import torch
import torch.nn as nn

from torchslim.checkpoint import load_checkpoint, save_checkpoint
from torchslim.measure import accuracy
from torchslim.quantization import (
    BF16Config,
    DynamicInt8Config,
    FP16Config,
    Int8DynamicLinear,
    QATConfig,
    QConv2d,
    SeedDynamicConfig,
    WeightOnlyConfig,
    WeightOnlyLinear,
    quantize,
)
from torchslim.training import TrainConfig


@pytest.mark.parametrize("cfg,dtype", [(FP16Config(), torch.float16), (BF16Config(), torch.bfloat16)])
def test_casts(cfg, dtype, lenet5, calib):
    q, report = quantize(lenet5, cfg, calib_data=calib)
    assert q.conv1.weight.dtype == dtype and lenet5.conv1.weight.dtype == torch.float32
    out = q(calib[:8])
    assert out.dtype == torch.float32
    assert report.summary["output_rel_error"] < (0.005 if dtype == torch.float16 else 0.03)
    assert report.summary["top1_agreement"] >= 0.98


def test_dynamic_int8_and_checkpoint(lenet300, digits, tmp_path):
    test = digits[2]
    q, report = quantize(lenet300, DynamicInt8Config())
    assert all(isinstance(getattr(q, n), Int8DynamicLinear) for n in ("fc1", "fc2", "fc3"))
    assert accuracy(q, test) >= accuracy(lenet300, test) - 1.0
    p = save_checkpoint(q, tmp_path / "d.safetensors", architecture="lenet300")
    p0 = save_checkpoint(lenet300, tmp_path / "f.safetensors", architecture="lenet300")
    assert p0.stat().st_size / p.stat().st_size > 3.5
    q2, _ = load_checkpoint(p)
    assert torch.equal(q(test.images[:50]), q2(test.images[:50]))


def test_seed_dynamic_call_works_with_its_warning_handled(lenet300, digits):
    test = digits[2]
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        q, report = quantize(lenet300, SeedDynamicConfig())
    assert not [w for w in leaked if "deprecat" in str(w.message).lower()]
    assert any("deprecat" in w.lower() for w in report.summary["warnings"])
    assert type(q.fc1).__module__.startswith("torch.ao.nn.quantized")
    assert accuracy(q, test) >= accuracy(lenet300, test) - 1.0
    with pytest.raises(Exception, match="takes no targets"):
        quantize(lenet300, SeedDynamicConfig(), targets={"fc1": None})


def test_int4_weight_only_size_and_accuracy(lenet300, digits, tmp_path):
    test = digits[2]
    q, report = quantize(lenet300, WeightOnlyConfig(bits=4, group_size=32))
    assert isinstance(q.fc1, WeightOnlyLinear) and q.fc1.weight_packed.dtype == torch.uint8
    assert accuracy(q, test) >= accuracy(lenet300, test) - 2.0
    p = save_checkpoint(q, tmp_path / "w4.safetensors", architecture="lenet300")
    p0 = save_checkpoint(lenet300, tmp_path / "f.safetensors", architecture="lenet300")
    assert p0.stat().st_size / p.stat().st_size >= 6.0
    q2, _ = load_checkpoint(p)
    assert torch.equal(q(test.images[:50]), q2(test.images[:50]))


def test_dynamic_leaves_convolutions_in_float_and_says_so(lenet5):
    q, report = quantize(lenet5, DynamicInt8Config())
    conv = next(e for e in report.layers if e.name == "conv1")
    assert conv.action == "skipped" and "StaticInt8Config" in conv.detail
    assert type(q.conv1) is nn.Conv2d and isinstance(q.fc1, Int8DynamicLinear)


@pytest.mark.slow
@pytest.mark.parametrize("learn", [False, True])
def test_qat_w4a8_trains_and_converts_to_integers(learn, lenet5, digits, calib):
    train, val, test = digits
    cfg = QATConfig(weight_bits=4, learn_scales=learn,
                    train=TrainConfig(epochs=1, lr=0.01, batch_size=64, augment=False, max_steps=15))  # fmt: skip
    q, report = quantize(lenet5, cfg, calib_data=calib, train_data=train, val_data=val)
    assert isinstance(q.conv1, QConv2d)
    assert int(q.conv1.weight_int8.abs().max()) <= 8  # 4-bit weights in int8 storage
    assert report.summary["qat"]["steps"] == 15
    assert accuracy(q, test) >= accuracy(lenet5, test) - 3.0
    assert lenet5.conv1.weight.requires_grad and type(lenet5.conv1) is nn.Conv2d  # user's model untouched


# ----------------------------------------------------------------------------- attention layers
_MHA_REASON = "nn.MultiheadAttention reads out_proj's weight directly; kept in float"


def _rel_err(out, ref):
    return float((out - ref).detach().norm() / ref.detach().norm())


def _encoder_layer():
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True, dropout=0.0).eval()


@pytest.mark.parametrize("cfg,bound", [(DynamicInt8Config(), 0.05), (WeightOnlyConfig(bits=8), 0.02)])
def test_transformer_layer_keeps_out_proj_float_and_runs(cfg, bound):
    layer = _encoder_layer()
    x = torch.randn(4, 10, 64, generator=torch.Generator().manual_seed(1))
    q, report = quantize(layer, cfg)
    entries = {e.name: e for e in report.layers}
    assert entries["self_attn.out_proj"].action == "skipped" and entries["self_attn.out_proj"].detail == _MHA_REASON
    assert type(q.self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert isinstance(q.linear1, (Int8DynamicLinear, WeightOnlyLinear)) and isinstance(q.linear2, type(q.linear1))
    ref = layer(x)
    for ctx in (torch.enable_grad, torch.no_grad, torch.inference_mode):  # no_grad would pick torch's fused kernel
        with ctx():
            assert _rel_err(q(x), ref.detach()) < bound
    assert report.summary["fused_path_off"] == ["<root>"]


def test_transformer_encoder_two_layers_with_padding_mask():
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(_encoder_layer(), num_layers=2).eval()
    x = torch.randn(3, 12, 64, generator=torch.Generator().manual_seed(2))
    pad = torch.zeros(3, 12, dtype=torch.bool)
    pad[0, 8:] = True  # with a padding mask torch.no_grad converts to nested tensors
    q, report = quantize(enc, DynamicInt8Config())
    assert [e.name for e in report.skipped if e.detail == _MHA_REASON] == ["layers.0.self_attn.out_proj", "layers.1.self_attn.out_proj"]
    assert sum(e.action == "int8-dynamic" for e in report.layers) == 4
    with torch.no_grad():
        ref, out = enc(x, src_key_padding_mask=pad), q(x, src_key_padding_mask=pad)
    keep = ~pad
    assert out.shape == ref.shape and _rel_err(out[keep], ref[keep]) < 0.05


class _AttnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head((h + a).mean(1))


@pytest.mark.parametrize("method", ["dynamic", "weight-only", "static"])
def test_model_with_multihead_attention(method):
    from torchslim.quantization import StaticInt8Config

    torch.manual_seed(0)
    net = _AttnNet().eval()
    x = torch.randn(64, 8, 16, generator=torch.Generator().manual_seed(3))
    cfg = {"dynamic": DynamicInt8Config(), "weight-only": WeightOnlyConfig(bits=8), "static": StaticInt8Config()}[method]
    q, report = quantize(net, cfg, calib_data=x)
    entries = {e.name: e for e in report.layers}
    assert entries["attn.out_proj"].action == "skipped" and entries["attn.out_proj"].detail == _MHA_REASON
    assert entries["attn"].action == "skipped"  # in_proj is a raw Parameter, not a Linear
    assert {entries["embed"].action, entries["head"].action} == {report.layers[0].action}
    assert report.layers[0].action != "skipped"
    with torch.no_grad():
        assert _rel_err(q(x), net(x)) < 0.05
    assert report.summary["output_rel_error"] < 0.05


def test_targeting_out_proj_by_name_is_refused_with_the_reason():
    from torchslim.errors import TargetError

    with pytest.raises(TargetError, match="cannot quantize self_attn.out_proj: nn.MultiheadAttention reads out_proj's weight directly"):
        quantize(_encoder_layer(), DynamicInt8Config(), targets={"self_attn.out_proj": True})
    q, report = quantize(_encoder_layer(), DynamicInt8Config(), targets={"re:.*proj": True, "Linear": None})
    assert [e.action for e in report.layers if e.name == "self_attn.out_proj"] == ["skipped"]
    assert not any(isinstance(m, Int8DynamicLinear) for m in q.modules())


def test_static_reports_layers_inside_modules_fx_keeps_whole():
    from torchslim.quantization import StaticInt8Config

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(16, 64)
            self.block = _encoder_layer()
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.block(self.embed(x)).mean(1))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(64, 8, 16, generator=torch.Generator().manual_seed(4))
    q, report = quantize(net, StaticInt8Config(), calib_data=x)
    actions = {e.name: (e.action, e.detail) for e in report.layers}
    assert actions["embed"][0] == actions["head"][0] == "int8-static"
    assert actions["block.self_attn.out_proj"] == ("skipped", _MHA_REASON)
    assert actions["block.linear1"][0] == "skipped" and "traced graph" in actions["block.linear1"][1]
    with torch.no_grad():
        assert _rel_err(q(x), net(x)) < 0.05


def test_layers_whose_parent_reads_their_weight_stay_float_in_every_dynamic_method():
    """torchvision's Swin attention reads qkv.weight / proj.weight in its forward: found from the source."""
    import torchvision

    from torchslim.quantization import SeedDynamicConfig

    torch.manual_seed(0)
    m = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    for cfg in (DynamicInt8Config(), SeedDynamicConfig()):
        q, report = quantize(m, cfg)
        kept = {e.name for e in report.layers if e.action == "skipped" and "reads" in e.detail}
        assert "features.1.0.attn.qkv" in kept and "features.1.0.attn.proj" in kept and len(kept) == 24
        with torch.no_grad():
            assert float((q(x) - m(x)).norm() / m(x).norm()) < 0.1
