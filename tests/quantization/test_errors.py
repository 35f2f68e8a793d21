import pytest
import torch
import torch.nn as nn

from torchslim.errors import CompatibilityError, ConfigError, DataError, TargetError
from torchslim.quantization import (
    DynamicInt8Config,
    FP16Config,
    QATConfig,
    SeedDynamicConfig,
    StaticInt8Config,
    WeightOnlyConfig,
    quantize,
)


def test_calibration_data_errors(lenet5, calib):
    with pytest.raises(DataError, match="calib_data is empty"):
        quantize(lenet5, StaticInt8Config(), calib_data=torch.empty(0, 1, 28, 28))
    with pytest.raises(DataError, match="calib_data is empty"):
        quantize(lenet5, StaticInt8Config(), calib_data=[])
    bad = calib[:16].clone()
    bad[3, 0, 5, 5] = float("nan")
    bad[4, 0, 1, 1] = float("inf")
    with pytest.raises(DataError, match="2 NaN or infinite values"):
        quantize(lenet5, StaticInt8Config(), calib_data=bad)
    with pytest.raises(DataError, match=r"cannot take the first batch of calib_data: it got args\[0\]: float32\[8, 3, 32, 32\].*1 channels"):
        quantize(lenet5, StaticInt8Config(), calib_data=torch.randn(8, 3, 32, 32))
    with pytest.raises(DataError, match="different sample shapes"):
        quantize(lenet5, StaticInt8Config(), calib_data=[torch.randn(4, 1, 28, 28), torch.randn(4, 1, 30, 30)])
    with pytest.raises(DataError, match=r"no floating-point inputs \(args\[0\]: uint8\[4, 1, 28, 28\]\)"):
        quantize(lenet5, StaticInt8Config(), calib_data=torch.zeros(4, 1, 28, 28, dtype=torch.uint8))


def test_static_and_qat_need_calibration_data(lenet5):
    with pytest.raises(ConfigError, match="StaticInt8Config needs calib_data"):
        quantize(lenet5, StaticInt8Config())
    with pytest.raises(ConfigError, match="QATConfig needs calib_data"):
        quantize(lenet5, QATConfig())


def test_qat_needs_training_data(lenet5, calib):
    with pytest.raises(ConfigError, match="pass train_data= and val_data="):
        quantize(lenet5, QATConfig(), calib_data=calib)


def test_targets_that_match_nothing_or_unsupported_layers(lenet5, calib):
    with pytest.raises(TargetError, match="matched no"):
        quantize(lenet5, StaticInt8Config(), calib_data=calib, targets={"re:encoder.*": None})
    with pytest.raises(TargetError, match="neither a module name nor a module type"):
        quantize(lenet5, DynamicInt8Config(), targets={"Embedding": None})
    with pytest.raises(TargetError, match=r"\['pool'\] name \['MaxPool2d'\] layers this method cannot quantize"):
        quantize(lenet5, StaticInt8Config(), calib_data=calib, targets={"pool": True})


@pytest.mark.parametrize("make,field", [
    (lambda: WeightOnlyConfig(bits=3), "bits"), (lambda: WeightOnlyConfig(group_size=16), "group_size"),
    (lambda: StaticInt8Config(weight_bits=9), "weight_bits"), (lambda: StaticInt8Config(activation_bits=1), "activation_bits"),
    (lambda: QATConfig(weight_bits=0), "weight_bits"), (lambda: StaticInt8Config(observer="max"), "observer"),
])  # fmt: skip
def test_bits_out_of_range_and_bad_fields(make, field):
    with pytest.raises(ConfigError, match=rf"Config: {field}:"):
        make()


def test_already_quantized_models_are_refused(lenet5, lenet300, calib):
    q, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    with pytest.raises(CompatibilityError, match="layer conv1 is already quantized"):
        quantize(q, StaticInt8Config(), calib_data=calib)
    d, _ = quantize(lenet300, DynamicInt8Config())
    with pytest.raises(CompatibilityError, match="already quantized"):
        quantize(d, WeightOnlyConfig())
    seed, _ = quantize(lenet300, SeedDynamicConfig())
    with pytest.raises(CompatibilityError, match="already quantized"):
        quantize(seed, DynamicInt8Config())
    h, _ = quantize(lenet300, FP16Config())
    with pytest.raises(CompatibilityError, match="already torch.float16"):
        quantize(h, DynamicInt8Config())


def test_not_a_config_and_user_model_untouched(lenet5, calib):
    with pytest.raises(ConfigError, match="needs one of the config classes"):
        quantize(lenet5, {"observer": "minmax"})  # type: ignore[arg-type]
    before = {k: v.clone() for k, v in lenet5.state_dict().items()}
    lenet5.train()
    quantize(lenet5, StaticInt8Config(), calib_data=calib)
    assert lenet5.training and type(lenet5.conv1) is nn.Conv2d
    assert all(torch.equal(before[k], v) for k, v in lenet5.state_dict().items())


def test_reduce_range_none_is_refused_without_vnni(lenet5, calib):
    from torchslim.quantization import modules as qmodules

    has_vnni = qmodules._has_vnni()  # the CPU's kind, or TORCHSLIM_INT8_ISA=avx2's
    if has_vnni:
        q, _ = quantize(lenet5, StaticInt8Config(reduce_range="none"), calib_data=calib)
        assert int(q.conv1.weight_int8.abs().max()) == 127
    else:
        with pytest.raises(ConfigError, match="no AVX-512 VNNI"):
            quantize(lenet5, StaticInt8Config(reduce_range="none"), calib_data=calib)
