import sys

import numpy as np
import onnx
import pytest
import torch

from torchslim.errors import (
    CompatibilityError,
    ConfigError,
    DataError,
    MissingDependencyError,
    OutputExistsError,
)
from torchslim.export import ExportConfig, OrtEncoder, export_onnx, ort_session
from torchslim.models import create_model
from torchslim.quantization import (
    Int8DynamicLinear,
    SmoothQuantConfig,
    WeightOnlyLinear,
    quantize_gptq,
    quantize_smoothquant,
)
from torchslim.transformers import calibration_batches
from torchslim.transformers.testing import tiny_bert, tiny_tokenizer


@pytest.fixture(scope="module")
def calib():
    from torchslim.transformers.corpus import load_sentences

    return calibration_batches(tiny_tokenizer(), load_sentences(32), batch_size=16)


def _ref(model, x):
    with torch.no_grad():
        return model(**x).last_hidden_state.numpy()


def test_fp32_classifier_matches_pytorch(tmp_path):
    m = create_model("lenet5")
    r = export_onnx(m, tmp_path / "m.onnx", architecture="lenet5")
    assert r.max_abs_diff < 1e-4 and r.quantized_layers == {}
    x = torch.randn(5, 1, 28, 28)  # dynamic batch
    got = ort_session(tmp_path / "m.onnx").run(None, {"input": x.numpy()})[0]
    assert np.abs(got - m(x).detach().numpy()).max() < 1e-4
    # spinning worker threads change scheduling, never results
    spun = ort_session(tmp_path / "m.onnx", spin=True).run(None, {"input": x.numpy()})[0]
    assert np.array_equal(spun, got)


def test_fp32_encoder_matches_pytorch_at_other_shapes(tmp_path, calib):
    m = tiny_bert()
    r = export_onnx(m, tmp_path / "b.onnx", example=calib[0].as_kwargs())
    assert r.max_abs_diff < 1e-4
    x = calib[1].as_kwargs()  # other batch size and sequence length, with padding
    got = OrtEncoder(tmp_path / "b.onnx")(**x).numpy()
    keep = x["attention_mask"].numpy().astype(bool)
    assert np.abs(got - _ref(m, x))[keep].max() < 1e-4


@pytest.mark.parametrize("activation, form, op, matmuls", [
    ("per_tensor", "normalized", "DynamicQuantizeLinear", 16),
    ("per_token", "normalized", "DynamicQuantizeLinear", 16),  # rows divided by max|x|, fused dynamic GEMM
    ("per_token", "integer", "MatMulInteger", 4),
])  # fmt: skip
def test_int8_encoder_exports_integer_ops(tmp_path, calib, activation, form, op, matmuls):
    q, _ = quantize_smoothquant(tiny_bert(), calib, SmoothQuantConfig(activation=activation))
    r = export_onnx(q, tmp_path / "q.onnx", example=calib[0].as_kwargs(), config=ExportConfig(per_token_form=form))
    assert r.ops.get(op, 0) == 12 and r.ops.get("MatMul", 0) == matmuls
    assert set(r.quantized_layers.values()) == {"dynamic-token" if activation == "per_token" else "dynamic-tensor"}
    scale = np.abs(_ref(q, calib[0].as_kwargs())).max()
    assert r.max_abs_diff < 0.05 * scale
    inits = onnx.load(str(tmp_path / "q.onnx")).graph.initializer
    int8_w = [i for i in inits if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    float_w = [i.name for i in inits if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2]
    assert len(int8_w) == 12 and all("embeddings" in n for n in float_w)  # no float copy of a quantized weight left


def test_int4_weight_only_exports_blocked_qdq(tmp_path, calib):
    q, _ = quantize_gptq(tiny_bert(), calib)
    with pytest.raises(ConfigError, match="opset 21"):
        export_onnx(q, tmp_path / "q4.onnx", example=calib[0].as_kwargs())
    r = export_onnx(q, tmp_path / "q4.onnx", example=calib[0].as_kwargs(), config=ExportConfig(opset=21))
    assert r.ops["DequantizeLinear"] == 12 and r.max_abs_diff < 1e-3  # same float weights, float activations


def test_plain_quantized_linears_export(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    m[0] = Int8DynamicLinear.from_float(m[0], activation="per_tensor")
    m[2] = WeightOnlyLinear.from_float(m[2], bits=8, group_size=32)
    x = torch.randn(4, 16)
    r = export_onnx(m, tmp_path / "s.onnx", example=x, config=ExportConfig(opset=21))
    assert r.quantized_layers == {"0": "dynamic-tensor", "2": "none"}
    assert r.max_abs_diff < 0.05 * float(m(x).abs().max())


def test_bound_violation_writes_nothing(tmp_path, calib):
    q, _ = quantize_smoothquant(tiny_bert(), calib, SmoothQuantConfig(activation="per_tensor"))
    with pytest.raises(CompatibilityError, match="nothing was written"):
        export_onnx(q, tmp_path / "q.onnx", example=calib[0].as_kwargs(), config=ExportConfig(max_abs_diff=1e-9))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    m = create_model("lenet300")
    with pytest.raises(ConfigError, match="must end in .onnx"):
        export_onnx(m, tmp_path / "m.bin", architecture="lenet300")
    (tmp_path / "x.onnx").write_text("old")
    with pytest.raises(OutputExistsError, match="already exists"):
        export_onnx(m, tmp_path / "x.onnx", architecture="lenet300")
    assert (tmp_path / "x.onnx").read_text() == "old"
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(opset=5)


def test_onnxruntime_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'torchslim\[onnx\]'"):
        export_onnx(create_model("lenet300"), tmp_path / "m.onnx", architecture="lenet300")
    assert not (tmp_path / "m.onnx").exists()


def test_static_int8_exports_quantize_linear(tmp_path, calib):
    q, _ = quantize_smoothquant(tiny_bert(), calib, SmoothQuantConfig(activation="static"))
    r = export_onnx(q, tmp_path / "s.onnx", example=calib[0].as_kwargs())
    assert r.ops["QuantizeLinear"] == 12 and set(r.quantized_layers.values()) == {"int8 MatMul -> float"}
    assert r.max_abs_diff < 0.05 * np.abs(_ref(q, calib[0].as_kwargs())).max()


# ----------------------------------------------------------------------------- attention models
def _small_vit():
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision zero-inits the head: outputs would all be 0
    return vit


def _fused_attention_ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node if "attention" in n.op_type.lower() or n.domain]


@pytest.mark.parametrize("kind", ["vit", "encoder"])
def test_attention_models_export_past_the_fused_fast_path(tmp_path, kind):
    if kind == "vit":
        m, x, x2 = _small_vit(), torch.randn(2, 3, 32, 32), torch.randn(5, 3, 32, 32)
    else:
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        m, x, x2 = torch.nn.TransformerEncoder(layer, 2).eval(), torch.randn(2, 7, 32), torch.randn(5, 7, 32)
    assert torch.backends.mha.get_fastpath_enabled()
    r = export_onnx(m, tmp_path / "a.onnx", example=x)
    assert torch.backends.mha.get_fastpath_enabled()  # restored after export
    assert r.max_abs_diff < 1e-4 and _fused_attention_ops(tmp_path / "a.onnx") == []
    with torch.no_grad():  # the user's default: fused kernels in PyTorch, plain ops in ONNX
        ref = m(x2).numpy()
    got = ort_session(tmp_path / "a.onnx").run(None, {"input": x2.numpy()})[0]
    assert float(np.abs(ref).max()) > 0.1 and np.abs(got - ref).max() < 1e-4


def test_dynamic_int8_transformer_encoder_exports(tmp_path):
    from torchslim.quantization import DynamicInt8Config, quantize

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    enc = torch.nn.TransformerEncoder(layer, 2).eval()
    for lin in (enc.layers[1].linear1, enc.layers[1].linear2):  # the encoder deep-copies one layer; export tells layers apart by weights
        lin.reset_parameters()
    q, _ = quantize(enc, DynamicInt8Config(activation="per_tensor"))
    x = torch.randn(3, 7, 32)
    r = export_onnx(q, tmp_path / "q.onnx", example=x)
    assert sorted(r.quantized_layers) == ["layers.0.linear1", "layers.0.linear2", "layers.1.linear1", "layers.1.linear2"]
    with torch.no_grad():
        assert r.max_abs_diff < 0.02 * float(q(x).abs().max())


@pytest.mark.slow
def test_swin_t_exports(tmp_path):
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.swin_t(weights=None).eval()
    r = export_onnx(m, tmp_path / "swin.onnx", example=torch.randn(1, 3, 64, 64), config=ExportConfig(dynamic_batch=False))
    assert r.max_abs_diff < 1e-4


def test_export_leaves_the_callers_model_in_its_mode(tmp_path):
    m = create_model("lenet300").train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    r = export_onnx(m, tmp_path / "m.onnx", architecture="lenet300")
    assert m.training and r.max_abs_diff < 1e-4
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_a_forward_that_takes_a_dict_exports(tmp_path):
    class DictNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.fc = torch.nn.Linear(4 + 2, 3)

        def forward(self, batch):
            h = self.conv(batch["image"]).mean((2, 3))
            return self.fc(torch.cat([h, batch["aux"]], 1))

    torch.manual_seed(0)
    m = DictNet().eval()
    ex = ({"image": torch.randn(2, 1, 8, 8), "aux": torch.randn(2, 2), "label": torch.zeros(2).long()},)
    r = export_onnx(m, tmp_path / "d.onnx", example=ex)
    assert r.inputs == ["image", "aux"] and r.max_abs_diff < 1e-5  # the unused label is no ONNX input
    with pytest.raises(DataError, match=r"got tuple of \['Tensor', 'str'\]"):
        export_onnx(m, tmp_path / "e.onnx", example=(torch.zeros(1), "x"))
