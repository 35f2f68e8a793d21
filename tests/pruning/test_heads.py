import pytest
import torch

from torchslim.errors import ConfigError
from torchslim.measure import embedding_fidelity
from torchslim.pruning import HeadPruningConfig, WandaConfig, prune, prune_heads_and_neurons
from torchslim.transformers.embed import encode


def _dicts(bert_calib):
    return [b.as_kwargs() for b in bert_calib]


# Wanda is the one verb's method (torchslim.pruning.WandaConfig): on an encoder it takes the
# tokenizer's dicts, and the attention mask keeps padding out of the input norms.
def test_wanda_unstructured_rows(bert, bert_calib):
    p, rep = prune(bert, WandaConfig(amount=0.5), calib_data=_dicts(bert_calib))
    w = p.encoder.layer[0].intermediate.dense.weight
    assert ((w == 0).sum(1) == 16).all()  # exactly half of each 32-wide row
    assert rep.summary["targeted_sparsity_after"] == pytest.approx(0.5)
    assert rep.summary["layers_pruned"] == 12  # 6 Linears per block, 2 blocks; tiny bert has no pooler
    assert bert.encoder.layer[0].intermediate.dense.weight.ne(0).all()  # input untouched


def test_wanda_two_four_pattern(bert, bert_calib):
    p, rep = prune(bert, WandaConfig(pattern="2:4"), calib_data=_dicts(bert_calib))
    w = p.encoder.layer[1].output.dense.weight
    assert ((w.view(w.shape[0], -1, 4) != 0).sum(-1) == 2).all()
    assert rep.layers[0].detail == "2:4"
    with pytest.raises(ConfigError, match="leave amount out"):
        WandaConfig(pattern="2:4", amount=0.3)


def test_wanda_uses_activations(bert, bert_calib):
    # Scaling one input feature's activations up must protect its weights.
    with torch.no_grad():
        bert.embeddings.LayerNorm.weight[5] = 50.0
    p, _ = prune(bert, WandaConfig(amount=0.75), calib_data=_dicts(bert_calib))
    assert p.encoder.layer[0].attention.self.query.weight[:, 5].ne(0).all()


def test_wanda_leaves_padding_out_of_the_input_norms(bert, bert_calib):
    from torchslim.data.protocol import ModelInput
    from torchslim.pruning.unstructured import input_norms, resolve

    b = bert_calib[0].as_kwargs()
    ts, _ = resolve(bert, WandaConfig(), {"encoder.layer.0.attention.self.query": True}, 0.5)
    masked = input_norms(bert, ts, [(ModelInput((), b), None)])["encoder.layer.0.attention.self.query"]
    x = {}
    h = bert.encoder.layer[0].attention.self.query.register_forward_pre_hook(lambda m, i: x.setdefault("x", i[0]))
    with torch.no_grad():
        bert(**b)
    h.remove()
    keep = b["attention_mask"].bool()
    assert (~keep).any()  # the batch has padding
    assert torch.allclose(masked, x["x"][keep].pow(2).sum(0).sqrt(), rtol=1e-5)
    assert not torch.allclose(masked, x["x"].reshape(-1, x["x"].shape[-1]).pow(2).sum(0).sqrt(), rtol=1e-3)


def test_structured_shrinks_and_stays_close(bert, tok, bert_calib, sentences):
    p, rep = prune_heads_and_neurons(bert, bert_calib, HeadPruningConfig(head_fraction=0.25, ffn_fraction=0.25))
    att = p.encoder.layer[0].attention
    assert att.self.query.weight.shape == (24, 32) and att.output.dense.weight.shape == (32, 24)
    assert p.encoder.layer[0].intermediate.dense.weight.shape == (48, 32)
    assert rep.summary["params_after"] < rep.summary["params_before"]
    fid = embedding_fidelity(encode(bert, tok, sentences[64:]), encode(p, tok, sentences[64:]))
    assert fid["mean_cos"] > 0.9


def test_structured_removes_the_least_useful_head(bert, bert_calib):
    with torch.no_grad():  # head 2 of layer 0 contributes nothing
        bert.encoder.layer[0].attention.output.dense.weight[:, 16:24] = 0
    _, rep = prune_heads_and_neurons(bert, bert_calib, HeadPruningConfig(head_fraction=0.25))
    assert rep.layers[0].detail == "removed heads [2]"


def test_structured_needs_something_to_prune():
    with pytest.raises(ConfigError, match="nothing to prune"):
        prune_heads_and_neurons(None, [], HeadPruningConfig())  # type: ignore[arg-type]
