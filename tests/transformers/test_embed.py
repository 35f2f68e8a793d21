import pytest
import torch

from torchslim.errors import CheckpointError, DataError
from torchslim.measure.metrics import pooled_embedding
from torchslim.transformers.embed import encode, latency_inputs, load_tokenizer, tokenize
from torchslim.transformers.testing import save_tiny_bert


def test_pooled_embedding_ignores_padding():
    h = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    assert pooled_embedding(h, m).tolist() == [[2.0, 2.0]]


def test_encode_matches_manual_pooling_and_batching(bert, tok, sentences):
    e = encode(bert, tok, sentences[:10], batch_size=3)
    assert e.shape == (10, 32)
    assert torch.allclose(e.norm(dim=1), torch.ones(10), atol=1e-5)
    b = tokenize(tok, sentences[:10])
    with torch.no_grad():
        h = bert(**b.as_kwargs()).last_hidden_state
    manual = torch.nn.functional.normalize(pooled_embedding(h, b.attention_mask), dim=1)
    assert torch.allclose(e, manual, atol=1e-5)


def test_long_text_is_truncated_and_reported(bert, tok):
    long = " ".join(["library"] * 300)  # 300 tokens > the tiny model's 128
    with pytest.warns(UserWarning, match="1 of 2 texts are longer than the model's limit of 128 tokens"):
        b = tokenize(tok, [long, "short text"], model=bert)
    assert b.truncated == 1 and b.input_ids.shape[1] == 128
    with pytest.warns(UserWarning, match="truncated"):
        assert encode(bert, tok, [long]).shape == (1, 32)


def test_latency_inputs_are_unpadded(tok):
    x = latency_inputs(tok, 4, 48)
    assert x["input_ids"].shape == (4, 48) and bool(x["attention_mask"].all())


def test_empty_input_is_an_error(tok):
    with pytest.raises(DataError, match="non-empty list"):
        tokenize(tok, [])


def test_missing_tokenizer(tmp_path):
    save_tiny_bert(tmp_path / "m", tokenizer=False)
    with pytest.raises(CheckpointError, match="has no tokenizer"):
        load_tokenizer(tmp_path / "m")
    assert load_tokenizer(save_tiny_bert(tmp_path / "n")).tokenize("tools for") == ["tools", "for"]
