import copy

import pytest
import torch

from torchslim.data import load_dataset
from torchslim.models import create_model
from torchslim.training import TrainConfig, fit


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "val"), load_dataset("digits", "test")


def _train(name: str, digits, epochs: int):
    torch.manual_seed(0)
    train, val, _ = digits
    model = create_model(name)
    fit(model, TrainConfig(epochs=epochs, lr=0.05, batch_size=64, augment=False), train, val, quiet=True)
    return model.eval()


@pytest.fixture(scope="session")
def _lenet5(digits):
    return _train("lenet5", digits, 3)


@pytest.fixture(scope="session")
def _resnet8(digits):
    return _train("resnet8", digits, 1)


@pytest.fixture(scope="session")
def _lenet300(digits):
    return _train("lenet300", digits, 3)


@pytest.fixture
def lenet5(_lenet5):
    return copy.deepcopy(_lenet5)


@pytest.fixture
def resnet8(_resnet8):
    return copy.deepcopy(_resnet8)


@pytest.fixture
def lenet300(_lenet300):
    return copy.deepcopy(_lenet300)


@pytest.fixture(scope="session")
def calib(digits):
    return digits[0].images[:256]
