import warnings

import pytest
import torch
import torch.nn as nn

from torchslim.errors import CompatibilityError, ConfigError, TargetError, UnknownNameError
from torchslim.models import create_model
from torchslim.pruning import (
    GradualConfig,
    MagnitudeConfig,
    NMConfig,
    StructuredConfig,
    WandaConfig,
    config_from_dict,
    global_unstructured,
    prune,
)


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("amount", [1.0, 1.5, -0.1, -3, True, "0.5"])
def test_amount_outside_range_is_a_config_error(amount):
    with pytest.raises(ConfigError, match=r"MagnitudeConfig: amount: .*\(got"):
        MagnitudeConfig(amount=amount)


def test_config_typos_and_combinations():
    with pytest.raises(ConfigError, match="unknown field.*Did you mean: amount"):
        MagnitudeConfig(amout=0.5)
    with pytest.raises(ConfigError, match=r"n \(4\) must be smaller than m \(4\)"):
        NMConfig(n=4, m=4)
    with pytest.raises(ConfigError, match="ratio"):
        StructuredConfig(ratio=1.0)
    with pytest.raises(ConfigError, match="initial_sparsity 0.9 exceeds final_sparsity 0.5"):
        GradualConfig(final_sparsity=0.5, initial_sparsity=0.9)
    with pytest.raises(UnknownNameError, match="unknown pruning method 'magnitdue'.*Did you mean: magnitude"):
        config_from_dict({"type": "magnitdue", "amount": 0.5})


def test_integer_amount_above_parameter_count():
    model = create_model("lenet300")
    with pytest.raises(ConfigError, match="amount=1001 weights is more than the 1000 weights of fc3"):
        prune(model, MagnitudeConfig(amount=1001), targets=["fc3"])
    with pytest.raises(ConfigError, match="more than the 266200 weights of the 3 targeted layers"):
        prune(model, MagnitudeConfig(amount=266_201, scope="global"))
    assert not hasattr(model.fc3, "weight_mask")


def test_pruning_every_weight_of_a_layer():
    model = create_model("lenet300")
    before = _state(model)
    with pytest.raises(ConfigError, match=r"would remove every weight of fc3\.weight \(1000 weights\)"):
        prune(model, MagnitudeConfig(amount=1000), targets=["fc3"])
    # global ranking that empties one layer: fc3's weights are all tiny
    with torch.no_grad():
        model.fc3.weight.mul_(1e-6)
    with pytest.raises(ConfigError, match="every weight of fc3"):
        prune(model, MagnitudeConfig(amount=0.5, scope="global"))
    for k, v in _state(model).items():
        assert torch.equal(v, before[k] if k != "fc3.weight" else v)
    assert not hasattr(model.fc1, "weight_mask")


def test_unknown_parameter_and_layer_names():
    model = create_model("lenet300")
    with pytest.raises(UnknownNameError, match=r"layer fc1 \(Linear\) has no parameter 'wieght'.*Did you mean: weight"):
        prune(model, MagnitudeConfig(amount=0.5, parameter="wieght"))
    with pytest.raises(TargetError, match="'fc4'.*Did you mean: .*fc1"):
        prune(model, MagnitudeConfig(amount=0.5), targets=["fc4"])
    with pytest.raises(UnknownNameError, match="has no parameter 'wieght'"):
        global_unstructured([(model.fc1, "wieght")], amount=0.2)
    with pytest.raises(ConfigError, match=r"amount=1.0 is outside \[0, 1\)"):
        global_unstructured([(model.fc1, "weight")], amount=1.0)
    assert not hasattr(model.fc1, "weight_mask")


def test_structured_ratio_removing_all_channels(digits):
    train, _, _ = digits
    model = create_model("resnet8")
    before = _state(model)
    with pytest.raises(ConfigError, match="ratio 1.0 for layer conv1 would remove all of its channels"):
        prune(model, StructuredConfig(ratio=0.5), targets={"conv1": 1.0}, calib_data=train)
    with pytest.raises(ConfigError, match=r"would remove all channels of 6 layer\(s\): .*conv1 \(16\).*lower the ratio or round_to"):
        prune(model, StructuredConfig(ratio=0.9, round_to=16), calib_data=train)
    with pytest.raises(ConfigError, match="pass calib_data"):
        prune(model, StructuredConfig(ratio=0.5))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.conv1.out_channels == 16


def test_grouped_convolution_prunes_the_same_positions_in_every_group():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(1, 4, 8, 8))
    pruned, _ = prune(model, StructuredConfig(ratio=0.5, input_shape=[4, 8, 8]))
    assert pruned[0].groups == 2 and pruned[0].out_channels == 4
    assert pruned(torch.randn(2, 4, 8, 8)).shape == (2, 3)


def test_activation_aware_needs_calibration_data():
    with pytest.raises(ConfigError, match="needs calibration data"):
        prune(create_model("lenet300"), WandaConfig(amount=0.5))


def test_quantized_models_are_refused():
    model = create_model("lenet300")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(CompatibilityError, match="already quantized: layer fc1 is a Linear from torch.ao.nn.quantized.*Prune the FP32 model first"):
        prune(qmodel, MagnitudeConfig(amount=0.5))
    from torchslim.quantization.modules import Int8DynamicLinear

    model.fc2 = Int8DynamicLinear.from_float(model.fc2)
    with pytest.raises(CompatibilityError, match="layer fc2 is a Int8DynamicLinear from torchslim.quantization"):
        prune(model, StructuredConfig(ratio=0.3, input_shape=[1, 28, 28]))
    with pytest.raises(CompatibilityError, match="already quantized"):
        global_unstructured([(model.fc2, "bias")], amount=0.2)


def test_torchao_quantized_weights_are_refused():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = create_model("lenet300")
    quantize_(model, Int8WeightOnlyConfig())
    with pytest.raises(CompatibilityError, match="layer fc1 is quantized tensor weight"):
        prune(model, MagnitudeConfig(amount=0.5))


def test_bad_targets_values():
    model = create_model("lenet300")
    with pytest.raises(ConfigError, match="target 'fc1': MagnitudeConfig: amount"):
        prune(model, MagnitudeConfig(amount=0.5), targets={"fc1": 1.2})
    with pytest.raises(ConfigError, match="per-layer amounts .* need scope='layer'"):
        prune(model, MagnitudeConfig(amount=0.5, scope="global"), targets={"fc1": 0.9})


def test_input_shape_that_does_not_fit_the_model():
    from torchslim.errors import DataError

    with pytest.raises(DataError, match=r"does not run on args\[0\]: float32\[1, 3, 32, 32\]"):
        prune(create_model("lenet300"), StructuredConfig(ratio=0.3, input_shape=[3, 32, 32]))
