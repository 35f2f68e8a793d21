import pytest
import torch

from torchslim.errors import ConfigError
from torchslim.measure import embedding_fidelity
from torchslim.transformers.embed import encode
from torchslim.transformers.prune import (
    HeadPruningConfig,
    WandaConfig,
    prune_heads_and_neurons,
    wanda_prune,
)


def test_wanda_unstructured_rows(bert, calib):
    p, rep = wanda_prune(bert, calib, WandaConfig(sparsity=0.5))
    w = p.encoder.layer[0].intermediate.dense.weight
    assert ((w == 0).sum(1) == 16).all()  # exactly half of each 32-wide row
    assert rep.summary["sparsity"] == pytest.approx(0.5)
    assert bert.encoder.layer[0].intermediate.dense.weight.ne(0).all()  # input untouched
    assert [e.action for e in rep.layers].count("skipped") == 0  # tiny bert has no pooler


def test_wanda_two_four_pattern(bert, calib):
    p, _ = wanda_prune(bert, calib, WandaConfig(pattern="2:4"))
    w = p.encoder.layer[1].output.dense.weight
    assert ((w.view(w.shape[0], -1, 4) != 0).sum(-1) == 2).all()


def test_wanda_uses_activations(bert, calib):
    # Scaling one input feature's activations up must protect its weights.
    with torch.no_grad():
        bert.embeddings.LayerNorm.weight[5] = 50.0
    p, _ = wanda_prune(bert, calib, WandaConfig(sparsity=0.75))
    assert p.encoder.layer[0].attention.self.query.weight[:, 5].ne(0).all()


def test_structured_shrinks_and_stays_close(bert, tok, calib, sentences):
    p, rep = prune_heads_and_neurons(bert, calib, HeadPruningConfig(head_fraction=0.25, ffn_fraction=0.25))
    att = p.encoder.layer[0].attention
    assert att.self.query.weight.shape == (24, 32) and att.output.dense.weight.shape == (32, 24)
    assert p.encoder.layer[0].intermediate.dense.weight.shape == (48, 32)
    assert rep.summary["params_after"] < rep.summary["params_before"]
    fid = embedding_fidelity(encode(bert, tok, sentences[64:]), encode(p, tok, sentences[64:]))
    assert fid["mean_cos"] > 0.9


def test_structured_removes_the_least_useful_head(bert, calib):
    with torch.no_grad():  # head 2 of layer 0 contributes nothing
        bert.encoder.layer[0].attention.output.dense.weight[:, 16:24] = 0
    _, rep = prune_heads_and_neurons(bert, calib, HeadPruningConfig(head_fraction=0.25))
    assert rep.layers[0].detail == "removed heads [2]"


def test_structured_needs_something_to_prune():
    with pytest.raises(ConfigError, match="nothing to prune"):
        prune_heads_and_neurons(None, [], HeadPruningConfig())  # type: ignore[arg-type]
