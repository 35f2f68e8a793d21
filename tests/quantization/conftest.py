import copy

import pytest


@pytest.fixture(scope="session")
def _lenet5(train_tiny):
    return train_tiny("lenet5", 3)


@pytest.fixture(scope="session")
def _resnet8(train_tiny):
    return train_tiny("resnet8", 1)


@pytest.fixture(scope="session")
def _lenet300(train_tiny):
    return train_tiny("lenet300", 3)


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
