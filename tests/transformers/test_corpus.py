import pytest

from torchslim.errors import DataError
from torchslim.transformers.corpus import load_sentences, long_texts
from torchslim.transformers.testing import tiny_tokenizer


def test_sentences_are_unique_real_and_repeatable():
    a = load_sentences(1024)
    assert len(a) == 1024 == len(set(a))
    assert all(len(s.split()) >= 2 for s in a)
    assert a == load_sentences(1024)
    assert load_sentences(8, seed=1) != load_sentences(8)


def test_offsets_give_disjoint_sets():
    cal, ev = load_sentences(512), load_sentences(1024, offset=512)
    assert not set(cal) & set(ev)


def test_python_docs_fallback_has_enough_sentences():
    s = load_sentences(1000, source="python-docs")
    assert len(set(s)) == 1000


@pytest.mark.parametrize("kw, msg", [({"n": 0}, "n >= 1"), ({"source": "web"}, "unknown sentence source"),
                                     ({"n": 10**7}, "has only")])  # fmt: skip
def test_bad_requests(kw, msg):
    with pytest.raises(DataError, match=msg):
        load_sentences(**kw)


def test_long_texts_reach_the_token_count():
    tok = tiny_tokenizer()
    texts = long_texts(3, tok, tokens=40)
    assert len(texts) == 3
    assert all(len(tok(t)["input_ids"]) >= 40 for t in texts)
