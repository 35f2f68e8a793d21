import pytest
import torch

from torchslim.errors import ConfigError
from torchslim.measure import embedding_fidelity
from torchslim.quantization import GPTQConfig, WeightOnlyLinear
from torchslim.quantization.gptq import _rtn, gptq_quantize, quantize_gptq
from torchslim.transformers.embed import encode


def test_gptq_beats_round_to_nearest_on_correlated_inputs():
    torch.manual_seed(0)
    base = torch.randn(512, 16)
    x = base @ torch.randn(16, 128) + 0.1 * torch.randn(512, 128)  # low-rank, correlated features
    w = torch.randn(64, 128)
    q, s, z, info = gptq_quantize(w, x.T @ x, bits=4, group_size=32)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    deq = (q.float() - z.float().repeat_interleave(32, 1)) * s.float().repeat_interleave(32, 1)
    err_gptq = ((x @ deq.T - x @ w.T).norm() / (x @ w.T).norm()).item()
    err_rtn = ((x @ _rtn(w, 4, 32).T - x @ w.T).norm() / (x @ w.T).norm()).item()
    assert err_gptq < 0.7 * err_rtn
    assert info["gptq_out_err"] < info["rtn_out_err"]


def test_act_order_keeps_original_groups():
    torch.manual_seed(1)
    x = torch.randn(256, 64) * torch.linspace(0.1, 3, 64)
    w = torch.randn(16, 64)
    q, s, z, info = gptq_quantize(w, x.T @ x, group_size=16, act_order=True)
    assert s.shape == (16, 4) and info["gptq_out_err"] < info["rtn_out_err"]


def test_encoder_gptq_stores_weight_only_layers(bert, tok, bert_calib, sentences):
    q, rep = quantize_gptq(bert, bert_calib, GPTQConfig(group_size=16, block_size=32))
    assert rep.summary["quantized"] == 12
    lin = q.encoder.layer[1].output.dense
    assert isinstance(lin, WeightOnlyLinear) and lin.bits == 4 and lin.group_size == 16
    assert all(e.after["rel_out_err"] <= e.after["rtn_rel_out_err"] + 1e-6 for e in rep.layers if e.after)
    fid = embedding_fidelity(encode(bert, tok, sentences[64:]), encode(q, tok, sentences[64:]))
    assert fid["mean_cos"] > 0.99
    assert rep.summary["peak_rss_mb"] > 0


def test_inplace_quantizes_the_given_model(bert, bert_calib):
    q, _ = quantize_gptq(bert, bert_calib, inplace=True)
    assert q is bert and isinstance(bert.encoder.layer[0].intermediate.dense, WeightOnlyLinear)


def test_block_size_must_hold_whole_groups():
    with pytest.raises(ConfigError, match="multiple of group_size"):
        GPTQConfig(group_size=32, block_size=48)


def test_gptq_quantizes_a_model_without_transformer_blocks(lenet300, calib, digits):
    """Not only encoders: a plain MLP (no block list) is calibrated in one pass, through the verb,
    and GPTQ's output error on held-out digits is below round-to-nearest weight-only INT4's."""
    from torchslim.quantization import WeightOnlyConfig, quantize

    test = digits[2].images[:256]
    with torch.no_grad():
        ref = lenet300(test)
    mode = lenet300.training
    q, rep = quantize(lenet300, GPTQConfig(group_size=32), calib_data=calib)
    rtn, _ = quantize(lenet300, WeightOnlyConfig(bits=4, group_size=32))
    assert lenet300.training == mode and not isinstance(lenet300.fc1, WeightOnlyLinear)
    assert rep.summary["quantized"] == 3 and rep.summary["calibration_samples"] == 256
    assert all(isinstance(m, WeightOnlyLinear) for m in (q.fc1, q.fc2, q.fc3))
    with torch.no_grad():
        err_gptq = ((q(test) - ref).norm() / ref.norm()).item()
        err_rtn = ((rtn(test) - ref).norm() / ref.norm()).item()
    assert err_gptq < 0.5 * err_rtn and err_rtn < 0.1
