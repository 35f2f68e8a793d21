import pytest

from torchslim.transformers.calibrate import calibration_batches
from torchslim.transformers.corpus import load_sentences
from torchslim.transformers.testing import tiny_bert, tiny_tokenizer


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture()
def bert():
    return tiny_bert()


@pytest.fixture(scope="session")
def sentences():
    return load_sentences(96)


@pytest.fixture(scope="session")
def calib(tok, sentences):
    return calibration_batches(tok, sentences[:64], batch_size=32)
