import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    """(train, val, test) of scikit-learn's digits: the tiny real data set unit tests train on."""
    from torchslim.data import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "val"), load_dataset("digits", "test")


@pytest.fixture(scope="session")
def train_tiny(digits):
    """``train_tiny(name, epochs)``: a registered model trained on digits (seeded, eval mode)."""
    from torchslim.models import create_model
    from torchslim.training import TrainConfig, fit

    def train(name: str, epochs: int):
        torch.manual_seed(0)
        model = create_model(name)
        fit(model, TrainConfig(epochs=epochs, lr=0.05, batch_size=64, augment=False), digits[0], digits[1], quiet=True)
        return model.eval()

    return train


# A tiny BERT and real sentences: the transformer-method tests in quantization/, pruning/, export/
# and transformers/ share them.
@pytest.fixture(scope="session")
def tok():
    from torchslim.transformers.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture()
def bert():
    from torchslim.transformers.testing import tiny_bert

    return tiny_bert()


@pytest.fixture(scope="session")
def sentences():
    from torchslim.transformers.corpus import load_sentences

    return load_sentences(96)


@pytest.fixture(scope="session")
def bert_calib(tok, sentences):
    from torchslim.transformers import calibration_batches

    return calibration_batches(tok, sentences[:64], batch_size=32)
