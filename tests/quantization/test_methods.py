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
