"""The planner's per-layer options, the models they build and the recipes they write agree."""

import pytest
import torch
import torch.nn as nn

from torchslim.errors import ConfigError
from torchslim.models import create_model
from torchslim.planning.space import (
    Choice,
    build,
    make_space,
    quant_step,
    steps_for,
    stored_weight_bytes,
)
from torchslim.recipes.measure import saved_file_size
from torchslim.recipes.recipe import load_recipe


def test_options_follow_the_objective_and_the_model():
    lenet5 = create_model("lenet5")
    size = make_space(lenet5, "size", calibration=True)
    assert (size.prune_method, size.quant_method) == ("magnitude", "int8_static")
    assert list(size.layers) == ["conv1", "conv2", "fc1", "fc2"]
    assert size.layers["fc1"].prune == (0.0, 0.25, 0.5, 0.75, 0.9) and size.layers["fc1"].bits == (32, 8)
    lat = make_space(lenet5, "latency", calibration=True)
    assert (lat.prune_method, lat.quant_method) == ("structured", "int8_static")
    macs = make_space(lenet5, "macs", calibration=True)
    assert (macs.prune_method, macs.quant_method) == ("structured", None)
    mlp = make_space(create_model("lenet300"), "size", calibration=False)
    assert mlp.quant_method == "weight_only" and mlp.layers["fc2"].bits == (32, 8, 4)
    assert make_space(create_model("lenet300"), "latency", calibration=False).quant_method == "int8_dynamic"


def test_a_layer_whose_weight_its_parent_reads_is_not_quantized():
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
    space = make_space(layer, "size", calibration=False)
    assert space.layers["self_attn.out_proj"].bits == (32,)
    assert "out_proj" in space.layers["self_attn.out_proj"].why_not["quantize"]
    assert space.layers["linear1"].bits == (32, 8, 4)


def test_bad_objective_and_ratios_are_refused_before_work():
    with pytest.raises(ConfigError, match="unknown objective 'speed'"):
        make_space(create_model("lenet5"), "speed", calibration=True)
    with pytest.raises(ConfigError, match=r"ratios must lie in \(0, 1\)"):
        make_space(create_model("lenet5"), "size", calibration=True, ratios=(0.5, 1.0))


def test_the_built_model_is_the_one_the_recipe_steps_make(digits):
    from torchslim.planning.planner import _run_steps
    from torchslim.recipes.context import StepContext

    model = create_model("lenet5").eval()
    space = make_space(model, "size", calibration=True)
    assign = {"conv2": Choice(0.5, 8), "fc1": Choice(0.9, 8), "fc2": Choice(0.0, 32)}
    ctx = StepContext("digits", quiet=True, calibration_samples=256)
    calib = ctx.calibration()
    built = build(model, space, assign, calib)
    steps = steps_for(model, space, assign, finetune=None)
    assert [s["type"] for s in steps] == ["magnitude", "int8_static"]
    assert steps[1]["targets"] == {"conv1": None, "fc2": None}
    load_recipe({"steps": steps})  # the written recipe validates
    via_recipe = _run_steps(model, steps, ctx, 256)
    x = digits[2].images[:32]
    with torch.inference_mode():
        assert torch.equal(built(x), via_recipe(x))
    assert float((built.fc1.dequantized_weight() == 0).float().mean()) == pytest.approx(0.9, abs=0.002)
    assert isinstance(model.fc1, nn.Linear) and float((model.fc1.weight == 0).float().mean()) == 0.0  # input kept


def test_the_size_model_matches_the_checkpoint_within_two_percent(digits):
    model = create_model("lenet5").eval()
    space = make_space(model, "size", calibration=True)
    calib = digits[0].subset(256)
    base = saved_file_size(model, None, None)
    for assign in ({"fc1": Choice(0.9, 8)}, {"fc1": Choice(0.75, 32), "conv2": Choice(0.0, 8)}, {"fc1": Choice(0.5, 8)}):
        predicted = base - sum(space.layers[n].weights * 4 - stored_weight_bytes(space.layers[n].weights, c, space)
                               for n, c in assign.items())  # fmt: skip
        real = saved_file_size(build(model, space, assign, calib), None, None)
        assert abs(predicted - real) / real < 0.02, (assign, predicted, real)


def test_weight_only_steps_carry_bits_per_layer():
    model = create_model("lenet300")
    space = make_space(model, "size", calibration=False)
    step = quant_step(space, {"fc1": Choice(0.0, 4), "fc2": Choice(0.0, 8)})
    assert step == {"type": "weight_only", "bits": 8, "group_size": 32, "targets": {"fc1": 4, "fc2": 8, "fc3": None}}
    built = build(model, space, {"fc1": Choice(0.0, 4), "fc2": Choice(0.0, 8)}, None)
    assert (built.fc1.bits, built.fc2.bits, type(built.fc3).__name__) == (4, 8, "Linear")
