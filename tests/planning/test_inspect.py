"""torchslim.inspect: one row per layer with exact costs, the methods that apply and why the others do not."""

import json
import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.data import load_dataset
from torchslim.errors import ConfigError, DataError
from torchslim.methods import method_named, register_method, unregister_method
from torchslim.models import create_model
from torchslim.planning.inspect import NO_EXAMPLE, inspect

METHODS = ["int8_dynamic", "int8_static", "weight_only", "magnitude", "nm", "structured"]


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return inspect(create_model("lenet5"), load_dataset("digits", "test"))


def _names_op(info, model):
    """Every cannot reason names the layer (its type, a base type, its name or attribute) and says why."""
    mods = dict(model.named_modules())
    for r in info.rows:
        m = mods[r.name]
        ops = [t.__name__ for t in type(m).__mro__ if t not in (nn.Module, object)] + ([r.name, r.name.rsplit(".", 1)[-1]] if r.name else [])
        for method, why in r.cannot.items():
            assert "\n" not in why and any(op in why for op in ops), (r.name, method, why)
            assert len(re.findall(r"[A-Za-z]{2,}", why)) >= 5, why


# ----------------------------------------------------------------------------- LeNet-5: every number
def test_lenet5_rows_count_params_macs_and_shapes_exactly(lenet):
    rows = [(r.name, r.type, r.params, r.macs, r.output_shape) for r in lenet.rows]
    assert rows == [
        ("conv1", "Conv2d", 520, 288_000, [1, 20, 24, 24]),
        ("conv2", "Conv2d", 25_050, 1_600_000, [1, 50, 8, 8]),
        ("fc1", "Linear", 400_500, 400_000, [1, 500]),
        ("fc2", "Linear", 5_010, 5_000, [1, 10]),
    ]
    s = lenet.summary
    assert s["params"] == 431_080 and s["macs"] == 2_293_000 and s["macs_in_layers"] == 2_293_000
    assert s["float_bytes"] == 431_080 * 4 and s["example"] == "args[0]: float32[1, 1, 28, 28]"


def test_lenet5_says_which_methods_apply_and_why_not(lenet):
    applies = {r.name: sorted(r.applies) for r in lenet.rows}
    assert applies == {
        "conv1": ["int8_static", "magnitude", "structured"],  # 1 input channel: no 2:4
        "conv2": ["int8_static", "magnitude", "nm", "structured"],
        "fc1": sorted(METHODS),
        "fc2": ["int8_dynamic", "int8_static", "magnitude", "nm", "weight_only"],  # the output layer keeps its 10 classes
    }
    for r in lenet.rows:  # every method is in exactly one of the two dicts
        assert sorted([*r.applies, *r.cannot]) == sorted(METHODS)
    conv1, fc2 = lenet.row("conv1"), lenet.row("fc2")
    assert conv1.cannot["nm"].startswith("Conv2d: 1 input channels are not a multiple of m=4")
    assert conv1.cannot["int8_dynamic"].startswith("Conv2d is not an nn.Linear")
    assert fc2.cannot["structured"] == "Linear fc2 produces the model output: its output channels are fixed"
    assert "oneDNN" in conv1.applies["int8_static"] and "compile_int8" in conv1.applies["int8_static"]
    assert "ONNX Runtime" in lenet.row("fc1").applies["int8_dynamic"]
    assert "fused relu" in conv1.applies["int8_static"] and "float output" in fc2.applies["int8_static"]
    assert [r.group for r in lenet.rows] == [["conv1", "conv2"], ["conv2", "fc1"], ["fc1", "fc2"], ["fc1", "fc2"]]
    _names_op(lenet, create_model("lenet5"))


def test_lenet5_best_size_and_macs_are_the_layers_torchslim_would_build(lenet):
    fc1 = lenet.row("fc1")
    # INT4 weight-only (groups of 32): 500 rows x 400 packed bytes, fp16 scale + uint8 zero point per group, fp32 bias
    assert (fc1.best_form, fc1.best_bytes) == ("int4 weight-only", 500 * 400 + 500 * 25 * 3 + 500 * 4)
    conv2 = lenet.row("conv2")
    assert conv2.best_form == "int8 static" and 50 * 20 * 25 + 50 * 4 * 2 <= conv2.best_bytes < conv2.float_bytes / 3.9
    size = lenet.summary["best_size"]
    assert size["bytes"] == sum(r.best_bytes for r in lenet.rows) and size["ratio"] == round(1_724_320 / size["bytes"], 3)
    # 50% of every prunable group: conv1 20->10, conv2 50->25, fc1 500->250; fc2 keeps its 10 outputs
    macs = lenet.summary["best_macs"]
    assert macs["macs_after"] == 10 * 576 * 25 + 25 * 64 * 10 * 25 + 250 * 25 * 16 + 10 * 250 == 646_500
    assert macs["ratio"] == round(2_293_000 / 646_500, 3) and (macs["groups"], macs["groups_pruned"]) == (3, 3)
    assert macs["params_after"] == (10 * 25 + 10) + (25 * 10 * 25 + 25) + (250 * 400 + 250) + (10 * 250 + 10)


def test_lenet5_without_data_reports_unknown_shapes_and_still_judges_the_weights():
    info = inspect(create_model("lenet5"))
    conv1 = info.row("conv1")
    assert conv1.macs is None and conv1.output_shape is None and conv1.note == NO_EXAMPLE and conv1.group is None
    assert conv1.cannot["structured"].startswith("no example input: pass data")
    assert sorted(conv1.applies) == ["int8_static", "magnitude"]  # no trace or shape needed for these
    s = info.summary
    assert s["macs"] is None and s["macs_unknown"] == NO_EXAMPLE and s["best_macs"]["unknown"] == NO_EXAMPLE
    assert s["params"] == 431_080 and s["best_size"]["ratio"] > 6


def test_inspection_is_json_and_markdown(lenet):
    d = json.loads(json.dumps(lenet.to_dict()))
    assert [r["name"] for r in d["rows"]] == ["conv1", "conv2", "fc1", "fc2"] and d["summary"]["macs"] == 2_293_000
    md = lenet.to_markdown()
    assert "| conv1 | Conv2d | 520 | 288,000 | 1x20x24x24 | no | yes | no | yes | no | yes | conv1, conv2 |" in md
    assert "- fc2 (Linear) cannot structured: Linear fc2 produces the model output" in md
    assert len(lenet.cannot_lines()) == 6 and "best MACs: 2,293,000 -> 646,500" in md


# ----------------------------------------------------------------------------- what the methods cannot take
class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x)[0].mean(1))


def test_multihead_attention_out_proj_cannot_be_quantized_and_says_why():
    info = inspect(Attention(), torch.randn(3, 5, 16))
    out_proj = info.row("attn.out_proj")
    why = "nn.MultiheadAttention reads out_proj's weight directly; kept in float"
    assert out_proj.cannot["int8_dynamic"] == out_proj.cannot["int8_static"] == out_proj.cannot["weight_only"] == why
    assert out_proj.macs is None and "not called as a module" in out_proj.note
    assert out_proj.cannot["structured"] == ("NonDynamicallyQuantizableLinear attn.out_proj is not a layer of its own to "
                                             "Torch-Pruning: its channels go with its parent MultiheadAttention attn "
                                             "(in no channel group)")  # fmt: skip
    attn = info.row("attn")  # in_proj (5 x 16 x 48), scores and values (2 x 5 x 5 x 16), out_proj (5 x 16 x 16)
    assert attn.params == 3 * 16 * 16 + 3 * 16 and attn.macs == 5 * 16 * 48 + 2 * 5 * 5 * 16 + 5 * 16 * 16
    assert attn.cannot["int8_dynamic"].startswith("MultiheadAttention (its own in_proj_weight, in_proj_bias) is not an nn.Linear")
    assert sorted(info.row("head").applies) == ["int8_dynamic", "int8_static", "magnitude", "nm", "weight_only"]
    _names_op(info, Attention())


class DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.dw_bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 1, groups=8)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dw_bn(self.dw(F.relu(self.bn(self.stem(x))))))
        return self.fc(F.relu(self.grouped(x)).mean((2, 3)))


def test_depthwise_and_grouped_convolutions_show_their_channel_groups():
    model = DepthwiseNet().eval()
    info = inspect(model, torch.randn(2, 3, 8, 8))
    dw, grouped = info.row("dw"), info.row("grouped")
    # the depthwise conv's channels are the stem's: one group from the stem to the grouped conv's inputs
    assert sorted(dw.group) == ["bn", "dw", "dw_bn", "grouped", "stem"] and info.row("stem").group == dw.group
    assert "4 layer(s) lose output channels, 1 lose inputs" in dw.applies["structured"]
    assert "removes 8 of 16 in 8 equal slices" in dw.applies["structured"]  # the grouped conv splits it in 8 slices
    assert grouped.group == ["grouped", "fc"] and "removes 16 of 32 in 8 equal slices" in grouped.applies["structured"]
    assert dw.cannot["nm"].startswith("Conv2d: 1 input channels") and grouped.cannot["nm"].startswith("Conv2d: 2 input channels")
    assert "not ONNX yet (grouped convolution, groups=16)" in dw.applies["int8_static"]
    assert info.row("bn").cannot["int8_static"] == "BatchNorm2d has no integer kernel of its own: static INT8 folds it into stem"
    assert info.row("bn").best_form == "folded into stem" and info.row("bn").best_bytes == 0
    _names_op(info, model)


class NamedOutputs(nn.Module):
    """Returns a dict with a non-tensor entry: Torch-Pruning cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> dict:
        return {"logits": self.fc(self.conv(x).mean((2, 3))), "tokens": 3}


def test_a_model_torch_pruning_cannot_trace_still_gets_every_row_with_the_reason():
    info = inspect(NamedOutputs(), torch.randn(2, 3, 8, 8))
    assert [r.name for r in info.rows] == ["conv", "fc"] and info.summary["macs"] == 8 * 36 * 27 + 8 * 4
    for r in info.rows:
        assert r.cannot["structured"] == (f"{r.type} {r.name}: Torch-Pruning could not trace NamedOutputs to find its "
                                          "channel groups (TypeError: 'int' object is not iterable)")  # fmt: skip
        assert r.group is None
    assert sorted(info.row("fc").applies) == ["int8_dynamic", "int8_static", "magnitude", "nm", "weight_only"]
    assert info.summary["best_macs"]["ratio"] is None and "could not trace" in info.summary["best_macs"]["unknown"]
    assert info.summary["check_errors"] == []


def test_bert_groups_that_would_change_the_model_outputs_are_kept_whole(tok):
    from torchslim.transformers.testing import tiny_bert

    batch = dict(tok(["the cat sat on the mat", "a dog ran"], padding="max_length", max_length=16, return_tensors="pt"))
    model = tiny_bert(pooler=True)  # hidden 32, 2 layers, 4 heads, FFN 64
    info = inspect(model, [batch])
    assert info.summary["example"] == "input_ids: int64[1, 16], token_type_ids: int64[1, 16], attention_mask: int64[1, 16]"
    assert info.row("encoder.layer.0.intermediate.dense").macs == 16 * 32 * 64
    # the pooler's width is the model's pooler_output, the residual stream its last_hidden_state
    assert info.row("pooler.dense").cannot["structured"] == (
        "Linear pooler.dense: removing channels of pooler.dense's group changes the model's output shapes from "
        "[[1, 16, 32], [1, 32]] to [[1, 16, 32], [1, 16]]")  # fmt: skip
    stream = info.row("embeddings.word_embeddings").cannot["structured"]
    assert "coupled with 20 other layer(s)" in stream and "changes the model's output shapes" in stream
    ffn, query = info.row("encoder.layer.1.intermediate.dense"), info.row("encoder.layer.1.attention.self.query")
    assert ffn.applies["structured"].endswith("the estimate removes 32 of 64")
    attn = "encoder.layer.1.attention."
    assert query.group == [attn + "self.value", attn + "self.key", attn + "self.query", attn + "output.dense"]
    # 4 heads of 8: half the channels keep whole heads, one channel less does not
    assert "the estimate removes 16 of 32; removing a single channel breaks the model's forward (RuntimeError: shape '[1, 16, -1, 8]'" in query.applies["structured"]
    assert "torch.fx could not trace BertModel" in query.cannot["int8_static"] and "int8_dynamic" in query.applies
    _names_op(info, model)


def test_reflect_padding_and_string_padding_convolutions_are_not_static_int8():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(4, 4, 3, padding="same"))
    info = inspect(model, torch.randn(1, 1, 6, 6))
    assert info.row("0").cannot["int8_static"].startswith("Conv2d with padding_mode='reflect': the integer QConv2d pads with zeros")
    assert info.row("1").cannot["int8_static"] == "Conv2d with padding='same': the integer QConv2d takes numeric padding only"


def test_transformer_encoder_layer_has_no_crash_and_names_the_untraceable_forward():
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    info = inspect(layer, torch.randn(4, 6, 32))
    assert [r.name for r in info.rows] == ["self_attn", "self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"]
    assert info.row("linear1").macs == 6 * 32 * 64 and info.row("linear1").output_shape == [1, 6, 64]
    assert sorted(info.row("linear1").applies) == ["int8_dynamic", "magnitude", "nm", "structured", "weight_only"]
    assert "torch.fx could not trace TransformerEncoderLayer" in info.row("linear1").cannot["int8_static"]
    # the residual width is read by the attention: removing channels there breaks the forward
    assert "breaks the model's forward (RuntimeError" in info.row("linear2").cannot["structured"]
    assert info.summary["check_errors"] == [] and info.summary["best_macs"]["ratio"] > 1
    _names_op(info, layer)


def test_mobilenet_v3_small_every_layer_judged_without_a_crash():
    from torchvision.models import mobilenet_v3_small

    from torchslim.measure.macs import count_macs

    torch.manual_seed(0)
    model = mobilenet_v3_small(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    info = inspect(model, x)
    assert len(info.rows) == sum(1 for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
    assert info.summary["check_errors"] == [] and info.summary["macs"] == count_macs(model, x[:1])
    convs = [r for r in info.rows if r.type == "Conv2d"]
    assert all("int8_static" in r.applies for r in convs) and all("magnitude" in r.applies for r in convs)
    depthwise = [r for r in convs if dict(model.named_modules())[r.name].groups > 1]
    assert len(depthwise) == 11 and all(r.cannot["nm"].startswith("Conv2d: 1 input channels") for r in depthwise)
    assert all(r.group is not None and "structured" in r.applies for r in depthwise)
    assert info.row("classifier.3").cannot["structured"].endswith("produces the model output: its output channels are fixed")
    assert info.summary["methods"]["int8_static"]["layers"] == 54 and info.summary["best_macs"]["ratio"] > 2
    assert info.summary["best_size"]["forms"] == {"int8 static": 52, "folded": 34, "int4 weight-only": 2}
    _names_op(info, model)


# ----------------------------------------------------------------------------- the registry and the inputs
def test_the_methods_and_their_checks_come_from_the_registry():
    for name in METHODS:
        assert method_named(name).applies is not None
    assert method_named("fp16").applies is None

    class HalveLinearsConfig:
        method = "halve_linears_example"

    register_method(HalveLinearsConfig, verb="prune", handler=lambda m, c, call: (m, call.report),
                    applies=lambda model, name, m, ex: None if isinstance(m, nn.Linear) else f"{type(m).__name__} is not a Linear layer here",
                    applies_detail=lambda model, name, m, ex: "halves it")  # fmt: skip
    try:
        info = inspect(create_model("lenet5"))
        assert info.row("fc1").applies["halve_linears_example"] == "halves it"
        assert info.row("conv1").cannot["halve_linears_example"] == "Conv2d is not a Linear layer here"
    finally:
        unregister_method(HalveLinearsConfig)
    with pytest.raises(ConfigError, match="give applies= too"):
        register_method(HalveLinearsConfig, verb="prune", handler=lambda m, c, call: (m, call.report), applies_detail=lambda *a: "")


def test_a_failing_check_is_reported_on_the_layer_not_raised():
    class BrokenConfig:
        method = "broken_check_example"

    def boom(model, name, m, ex):
        raise RuntimeError("odd layer")

    register_method(BrokenConfig, verb="prune", handler=lambda m, c, call: (m, call.report), applies=boom)
    try:
        info = inspect(create_model("lenet5"))
    finally:
        unregister_method(BrokenConfig)
    assert info.row("fc2").cannot["broken_check_example"] == "the broken_check_example check failed on Linear fc2 (RuntimeError: odd layer)"
    assert len(info.summary["check_errors"]) == 4


def test_data_the_model_cannot_take_and_wrong_arguments_are_torchslim_errors():
    with pytest.raises(DataError, match=r"cannot take the first batch of data: it got args\[0\]: float32\[1, 3, 32, 32\]"):
        inspect(create_model("lenet5"), torch.randn(4, 3, 32, 32))
    with pytest.raises(ConfigError, match="needs an nn.Module"):
        inspect("lenet5")
    with pytest.raises(ConfigError, match="not both"):
        inspect(create_model("lenet5"), torch.randn(2, 1, 28, 28), example=torch.randn(1, 1, 28, 28))


def test_dict_batches_and_the_model_is_left_as_it_was():
    class DictIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return self.b(F.relu(self.a(features))) * scale

    model = DictIn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [{"features": torch.randn(3, 4), "scale": torch.ones(3, 1), "labels": torch.zeros(3)}]
    info = inspect(model, batches)
    assert info.summary["example"] == "features: float32[1, 4], scale: float32[1, 1]"
    assert info.row("a").macs == 32 and info.row("b").output_shape == [1, 2] and info.summary["macs"] == 32 + 16
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and math.isclose(info.summary["best_macs"]["ratio"], 2.0)


def test_planning_and_torchslim_export_inspect_lazily():
    import torchslim
    import torchslim.planning
    import torchslim.planning.inspect as _module  # noqa: F401 - the module named after its function...

    assert torchslim.inspect is inspect and torchslim.planning.inspect is inspect  # ...does not hide it


def test_a_model_every_verb_refuses_is_reported_on_every_layer():
    from torchslim.quantization import DynamicInt8Config, quantize

    broken = create_model("lenet5")
    with torch.no_grad():
        broken.fc1.weight[0, 0] = float("nan")
    info = inspect(broken)
    assert info.summary["refused"].startswith("compression: the model holds NaN or infinite values in fc1.weight (1 of 400000)")
    assert all(r.applies == {} and sorted(r.cannot) == sorted(METHODS) for r in info.rows)
    assert info.summary["allows"][0].startswith("every method refuses this model: compression: the model holds NaN")
    q, _ = quantize(create_model("lenet5"), DynamicInt8Config())
    info = inspect(q)
    assert "layer fc1 is already quantized (Int8DynamicLinear)" in info.row("fc1").cannot["magnitude"]
