import pytest
import torch

from torchslim.errors import ConfigError
from torchslim.measure import embedding_fidelity
from torchslim.quantization import WeightOnlyLinear
from torchslim.transformers.embed import encode
from torchslim.transformers.gptq import GPTQConfig, _rtn, gptq_quantize, quantize_encoder_gptq


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


def test_encoder_gptq_stores_weight_only_layers(bert, tok, calib, sentences):
    q, rep = quantize_encoder_gptq(bert, calib, GPTQConfig(group_size=16, block_size=32))
    assert rep.summary["quantized"] == 12
    lin = q.encoder.layer[1].output.dense
    assert isinstance(lin, WeightOnlyLinear) and lin.bits == 4 and lin.group_size == 16
    assert all(e.after["rel_out_err"] <= e.after["rtn_rel_out_err"] + 1e-6 for e in rep.layers if e.after)
    fid = embedding_fidelity(encode(bert, tok, sentences[64:]), encode(q, tok, sentences[64:]))
    assert fid["mean_cos"] > 0.99
    assert rep.summary["peak_rss_mb"] > 0


def test_inplace_quantizes_the_given_model(bert, calib):
    q, _ = quantize_encoder_gptq(bert, calib, inplace=True)
    assert q is bert and isinstance(bert.encoder.layer[0].intermediate.dense, WeightOnlyLinear)


def test_block_size_must_hold_whole_groups():
    with pytest.raises(ConfigError, match="multiple of group_size"):
        GPTQConfig(group_size=32, block_size=48)
