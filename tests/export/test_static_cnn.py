"""Static INT8 CNNs (QConv2d / QLinear) exported as QDQ ONNX and run on ONNX Runtime's integer kernels."""

import copy

import numpy as np
import onnx
import pytest
import torch

import torchslim
from torchslim.errors import CompatibilityError, DataError
from torchslim.export import ExportConfig, OrtModel, export_onnx
from torchslim.export.cnn import rewrite_static, static_specs
from torchslim.measure import accuracy, compare_latency
from torchslim.quantization import StaticInt8Config


@pytest.fixture(scope="module")
def int8_models(digits, train_tiny):
    calib = digits[0].images[:64]
    out = {}
    for name, epochs in (("lenet5", 2), ("resnet8", 3)):
        model = train_tiny(name, epochs)
        q, _ = torchslim.quantize(model, StaticInt8Config(), calib_data=calib)
        out[name] = (model, q)
    return out


def _optimized_ops(path, tmp_path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops: dict[str, int] = {}
    for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


@pytest.mark.parametrize("name", ["lenet5", "resnet8"])
def test_ort_reproduces_torchslim_int8(name, int8_models, digits, tmp_path):
    _, q = int8_models[name]
    test = digits[2]
    r = export_onnx(q, tmp_path / "q.onnx", example=test.images[:16])
    layers = dict(q.named_modules())
    assert set(r.quantized_layers) == {n for n, m in layers.items() if type(m).__name__ in ("QConv2d", "QLinear")}
    assert all(v.startswith("int8") for v in r.quantized_layers.values()), r.quantized_layers
    with torch.no_grad():
        ref = q(test.images)
    got = OrtModel(tmp_path / "q.onnx")(test.images)
    agree = float((got.argmax(1) == ref.argmax(1)).float().mean())
    rel = float((got - ref).abs().max() / ref.abs().max())
    assert agree >= 0.98, agree
    # Same scales and zero points: outputs differ by a few output steps at most (measured: lenet5
    # ~0.5%, resnet8 ~2% of the logits' range, the latter from the requantized residual convs).
    assert rel < (0.02 if name == "lenet5" else 0.06), rel
    assert abs(accuracy(OrtModel(tmp_path / "q.onnx"), test) - accuracy(q, test)) <= 1.0


def test_residual_float_form_is_exact(int8_models, digits, tmp_path):
    _, q = int8_models["resnet8"]
    test = digits[2]
    r = export_onnx(q, tmp_path / "q.onnx", example=test.images[:16], config=ExportConfig(residual="float"))
    assert r.quantized_layers["layer1.0.conv2"].startswith("float Conv")
    with torch.no_grad():
        ref = q(test.images)
    got = OrtModel(tmp_path / "q.onnx")(test.images)
    assert float((got.argmax(1) == ref.argmax(1)).float().mean()) >= 0.99
    assert float((got - ref).abs().max() / ref.abs().max()) < 0.02


@pytest.mark.parametrize(("name", "convs", "matmuls"), [("lenet5", 2, 2), ("resnet8", 9, 1)])
def test_ort_fuses_integer_kernels(name, convs, matmuls, int8_models, digits, tmp_path):
    _, q = int8_models[name]
    export_onnx(q, tmp_path / "q.onnx", example=digits[2].images[:4])
    ops = _optimized_ops(tmp_path / "q.onnx", tmp_path)
    assert ops.get("QLinearConv", 0) == convs, ops
    assert ops.get("QGemm", 0) + ops.get("QLinearMatMul", 0) == matmuls, ops
    assert "Conv" not in ops and "FusedConv" not in ops and "Gemm" not in ops, ops
    if name == "resnet8":
        assert ops.get("QLinearAdd", 0) == 3 and ops.get("QLinearGlobalAveragePool", 0) == 1, ops
    else:  # max-pooling stays on uint8
        assert ops.get("DequantizeLinear", 0) == 0, ops


@pytest.mark.parametrize("name", ["lenet5", "resnet8"])
def test_int8_file_is_4x_smaller_and_stores_int8(name, int8_models, digits, tmp_path):
    fp32, q = int8_models[name]
    x = digits[2].images[:4]
    rf = export_onnx(fp32, tmp_path / "f.onnx", example=x)
    rq = export_onnx(q, tmp_path / "q.onnx", example=x)
    ratio = rf.size_bytes / rq.size_bytes
    # measured 3.95x (lenet5, 431k weights) and 3.25x (resnet8, 78k weights: per-channel scales,
    # INT32 biases and graph structure weigh relatively more)
    assert ratio >= (3.8 if name == "lenet5" else 3.1), ratio
    proto = onnx.load(str(tmp_path / "q.onnx"))
    inits = [onnx.numpy_helper.to_array(i) for i in proto.graph.initializer]
    q_weights = sum(m.weight_int8.numel() for m in q.modules() if hasattr(m, "weight_int8"))
    channels = sum(m.weight_scale.numel() for m in q.modules() if hasattr(m, "weight_int8"))
    assert sum(v.size for v in inits if v.dtype == np.int8) == q_weights + channels  # + weight zero points
    # what stays wider (scales, INT32 biases, activation parameters) is < 3% of the weights' count
    assert sum(v.size for v in inits if v.dtype != np.int8) < 0.03 * q_weights


def test_ort_model_works_with_measure_tools(int8_models, digits, tmp_path):
    fp32, q = int8_models["lenet5"]
    export_onnx(q, tmp_path / "q.onnx", example=digits[2].images[:4])
    m = OrtModel(tmp_path / "q.onnx", threads=1)
    assert isinstance(m, torch.nn.Module) and list(m.parameters()) == []
    a, b, ratio = compare_latency(fp32, m, digits[2].images[:8], warmup=1, runs=3, threads=1)
    assert a.runs == 3 and b.runs == 3 and ratio > 0


def test_bad_input_is_a_torchslim_error(int8_models, digits, tmp_path):
    _, q = int8_models["lenet5"]
    export_onnx(q, tmp_path / "q.onnx", example=digits[2].images[:4])
    m = OrtModel(tmp_path / "q.onnx")
    with pytest.raises(DataError, match=r"shape \[.*1, 28, 28\]"):
        m(torch.zeros(2, 3, 28, 28))
    with pytest.raises(DataError, match="float"):
        m(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(DataError, match="torch.Tensor"):
        m(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(CompatibilityError, match="cannot load"):
        OrtModel(b"not an onnx model")
    grouped = copy.deepcopy(q)
    grouped.conv2.groups = 2
    with pytest.raises(CompatibilityError, match="groups=2"):
        static_specs(grouped)
    # a graph without the layers' weights (e.g. an unrelated model) cannot take the rewrite
    other = onnx.load(str(tmp_path / "q.onnx"))
    specs = static_specs(q)
    assert set(rewrite_static(other, specs).values()) == {"not in graph"}


@pytest.mark.parametrize("reduce_range, warned", [("none", True), ("weights", False)])
def test_export_warns_when_8_bit_weights_can_saturate_without_vnni(reduce_range, warned, train_tiny, digits, tmp_path,
                                                                    monkeypatch):
    """8-bit weights x 8-bit activations are exact in ORT only with VNNI (or on ARM): the export says
    so, naming the layers and the fix; 7-bit weights export without the warning. Both paths are
    forced (the model is quantized as on a VNNI CPU and not run here), so the test means the same
    on either CPU kind."""
    from torchslim.quantization import modules as qmodules

    model = train_tiny("lenet5", 1)
    monkeypatch.setattr(qmodules, "_has_vnni", lambda: True)
    q, _ = torchslim.quantize(model, StaticInt8Config(reduce_range=reduce_range), calib_data=digits[0].images[:64])
    res = export_onnx(q, tmp_path / "m.onnx", example=digits[2].images[:2], config=ExportConfig(check=False))
    assert bool(res.warnings) is warned and res.as_dict()["warnings"] == res.warnings
    if warned:
        assert "INT8 layers (conv1, conv2" in res.warnings[0] and "reduce_range='weights'" in res.warnings[0]
