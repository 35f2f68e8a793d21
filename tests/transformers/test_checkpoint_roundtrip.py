import json

import pytest
import torch

from torchslim.checkpoint import load_checkpoint, save_checkpoint
from torchslim.pruning import HeadPruningConfig, WandaConfig, prune, prune_heads_and_neurons
from torchslim.quantization import (
    GPTQConfig,
    SmoothQuantConfig,
    quantize_gptq,
    quantize_smoothquant,
)
from torchslim.transformers.testing import tiny_bert

METHODS = {
    "int8": lambda m, c: quantize_smoothquant(m, c),
    "int8_static": lambda m, c: quantize_smoothquant(m, c, SmoothQuantConfig(activation="static")),
    "gptq4": lambda m, c: quantize_gptq(m, c, GPTQConfig(group_size=16, block_size=32)),
    "wanda24": lambda m, c: prune(m, WandaConfig(pattern="2:4"), calib_data=[b.as_kwargs() for b in c]),
    "heads_ffn": lambda m, c: prune_heads_and_neurons(m, c, HeadPruningConfig(head_fraction=0.5, ffn_fraction=0.5)),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_compressed_encoder_round_trips_with_identical_outputs(method, bert, bert_calib, tmp_path):
    comp, _ = METHODS[method](bert, bert_calib)
    path = save_checkpoint(comp, tmp_path / f"{method}.safetensors", meta={"method": method})
    fresh = tiny_bert(seed=123)  # different random weights: everything must come from the file
    loaded, meta = load_checkpoint(path, model=fresh)
    assert meta["method"] == method
    x = bert_calib[0].as_kwargs()
    with torch.no_grad():
        a, b = comp(**x).last_hidden_state, loaded(**x).last_hidden_state
    assert torch.equal(a, b)
    assert "pickle" not in path.read_bytes()[:2000].decode("latin1")
    kinds = {s["kind"] for s in json.loads(path.with_suffix(".json").read_text())["structure"]}
    expected = {"int8": "smoothed_linear", "int8_static": "smoothed_linear", "gptq4": "weight_only_linear", "wanda24": "linear", "heads_ffn": "linear"}
    assert expected[method] in kinds


def test_quantized_checkpoint_is_smaller(bert, bert_calib, tmp_path):
    fp32 = save_checkpoint(bert, tmp_path / "fp32.safetensors").stat().st_size
    q8 = save_checkpoint(quantize_smoothquant(bert, bert_calib)[0], tmp_path / "q8.safetensors").stat().st_size
    q4 = save_checkpoint(quantize_gptq(bert, bert_calib)[0], tmp_path / "q4.safetensors").stat().st_size
    # Embeddings (169 x 32 + 128 x 32) stay float in the tiny model, so the ratios are modest.
    assert q8 < 0.75 * fp32 and q4 < q8
