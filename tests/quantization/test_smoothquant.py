import pytest
import torch

from torchslim.errors import ConfigError, DataError, TargetError
from torchslim.measure import embedding_fidelity
from torchslim.quantization import (
    Int8DynamicLinear,
    SmoothedLinear,
    SmoothQuantConfig,
    quantize_smoothquant,
)
from torchslim.transformers.embed import encode


def test_int8_keeps_embeddings_and_leaves_the_input_alone(bert, tok, bert_calib, sentences):
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    q, rep = quantize_smoothquant(bert, bert_calib)
    assert all(torch.equal(v, bert.state_dict()[k]) for k, v in before.items())
    assert rep.summary["quantized"] == 12
    assert all(isinstance(q.get_submodule(e.name), SmoothedLinear) for e in rep.layers)
    assert all(isinstance(q.get_submodule(e.name).inner, Int8DynamicLinear) for e in rep.layers)
    fid = embedding_fidelity(encode(bert, tok, sentences[64:]), encode(q, tok, sentences[64:]))
    assert fid["mean_cos"] > 0.999 and fid["min_cos"] > 0.995


def test_smoothing_flattens_activation_outliers(bert, bert_calib):
    with torch.no_grad():  # plant an outlier channel in the embeddings' LayerNorm output
        bert.embeddings.LayerNorm.weight[3] = 40.0
    q, rep = quantize_smoothquant(bert, bert_calib, SmoothQuantConfig(smoothquant_alpha=0.5))
    e = next(e for e in rep.layers if e.name == "encoder.layer.0.attention.self.query")
    assert e.after["act_absmax"] < e.before["act_absmax"] / 3


def test_smoothed_linear_is_exact_in_float():
    lin = torch.nn.Linear(8, 4)
    s = torch.rand(8) + 0.1
    x = torch.randn(5, 8)
    assert torch.allclose(SmoothedLinear.wrap(lin, s)(x), lin(x), atol=1e-5)


def test_keep_float_keeps_the_most_sensitive(bert, bert_calib):
    q, rep = quantize_smoothquant(bert, bert_calib, SmoothQuantConfig(keep_float=2))
    kept = [e.name for e in rep.layers if e.action == "kept-float"]
    assert len(kept) == 2 and rep.summary["kept_float"] == sorted(kept)
    assert all(type(q.get_submodule(n)) is torch.nn.Linear for n in kept)


def test_targets_none_keeps_a_layer_and_bad_pattern_fails(bert, bert_calib):
    q, rep = quantize_smoothquant(bert, bert_calib, targets={"re:.*intermediate.*": None})
    assert type(q.encoder.layer[0].intermediate.dense) is torch.nn.Linear
    assert rep.summary["quantized"] == 10
    with pytest.raises(TargetError):
        quantize_smoothquant(bert, bert_calib, targets={"re:nothing_here": None})


def test_bad_config_and_data(bert):
    with pytest.raises(ConfigError, match="smoothquant_alpha"):
        SmoothQuantConfig(smoothquant_alpha=2)
    with pytest.raises(ConfigError, match="unknown field"):
        SmoothQuantConfig(alpha=0.5)
    with pytest.raises(DataError, match="at least one batch"):
        quantize_smoothquant(bert, [])


@pytest.mark.parametrize("observer", ["auto", "percentile"])
def test_static_activations_with_observers(bert, tok, bert_calib, sentences, observer):
    q, rep = quantize_smoothquant(bert, bert_calib, SmoothQuantConfig(activation="static", observer=observer))
    assert {e.action for e in rep.layers} == {"int8-static"}
    used = {e.detail.split("observer ")[1].split(",")[0] for e in rep.layers}
    assert used <= {"minmax", "percentile", "mse"} and (observer == "auto" or used == {observer})
    fid = embedding_fidelity(encode(bert, tok, sentences[64:]), encode(q, tok, sentences[64:]))
    assert fid["mean_cos"] > 0.99


def test_observers_ignore_padding_and_infinite_values():
    from torchslim.quantization.calibrate import finite_rows

    x = torch.tensor([[[1.0, -float("inf")], [2.0, 3.0], [900.0, 900.0]]])
    keep = torch.tensor([[1, 1, 0]]).bool()
    assert finite_rows(x, keep).tolist() == [[1.0, 0.0], [2.0, 3.0]]


def test_seven_bit_weights_stay_in_range(bert, bert_calib):
    q, rep = quantize_smoothquant(bert, bert_calib, SmoothQuantConfig(activation="per_tensor", weight_bits=7, weight_rounding="gptq"))
    w = q.encoder.layer[0].intermediate.dense.inner.weight_int8
    assert int(w.abs().max()) == 63
    assert "int7 weights (gptq rounding)" in rep.layers[0].detail


@pytest.mark.parametrize("activation", ["per_token", "static"])
def test_compiled_encoder_matches_eager(bert, tok, bert_calib, sentences, activation):
    from torchslim.measure.metrics import pooled_embedding
    from torchslim.quantization import compile_int8

    q, _ = quantize_smoothquant(bert, bert_calib, SmoothQuantConfig(activation=activation, weight_bits=7))
    compiled = compile_int8(q)
    b = bert_calib[0]
    with torch.inference_mode():
        eager = pooled_embedding(q(**b.as_kwargs())[0], b.attention_mask)
        got = pooled_embedding(compiled(**b.as_kwargs())[0], b.attention_mask)
    cos = torch.nn.functional.cosine_similarity(eager, got, dim=-1)
    assert got.shape == eager.shape and float(cos.min()) > 0.9999


def test_smoothquant_int8_works_on_any_model_with_linear_layers():
    """The encoder INT8 method reads any data protocol source: a CNN's classifier, a torch encoder."""
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from torchslim.quantization import SmoothQuantConfig, quantize_smoothquant

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    x = torch.randn(64, 3, 16, 16)
    loader = DataLoader(TensorDataset(x, torch.zeros(64).long()), batch_size=16)
    for act in ("per_token", "static"):
        q, rep = quantize_smoothquant(cnn, loader, SmoothQuantConfig(activation=act))
        with torch.no_grad():
            assert float((q(x) - cnn(x)).norm() / cnn(x).norm()) < 0.03
        assert rep.summary["quantized"] == 2 and rep.summary["calibration_samples"] == 64
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2).eval()
    xs = torch.randn(16, 10, 32)
    q, rep = quantize_smoothquant(enc, [xs[:8], xs[8:]], SmoothQuantConfig())
    with torch.no_grad():
        assert float((q(xs) - enc(xs)).norm() / enc(xs).norm()) < 0.03
    skipped = {e.name for e in rep.layers if e.action == "skipped"}
    assert skipped == {"layers.0.self_attn.out_proj", "layers.1.self_attn.out_proj"} and rep.summary["quantized"] == 4
