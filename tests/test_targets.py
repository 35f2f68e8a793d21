import pytest
import torch.nn as nn

from torchslim.errors import TargetError
from torchslim.targets import resolve_targets


def model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2))


def test_precedence_exact_over_regex_over_type_over_default():
    got = resolve_targets(model(), {"4": "exact", "re:[34]": "regex", "Conv2d": "type"}, default="d",
                          types=[nn.Conv2d, nn.Linear])
    assert got == {"0": "type", "3": "regex", "4": "exact"}


def test_none_skips():
    assert resolve_targets(model(), {"Linear": None}, default="d", types=[nn.Conv2d, nn.Linear]) == {"0": "d"}


def test_pattern_matching_nothing_is_an_error():
    with pytest.raises(TargetError, match="matched no"):
        resolve_targets(model(), {"re:fc.*": "x"}, default=None, types=[nn.Linear])


def test_unknown_name_suggests():
    with pytest.raises(TargetError, match="neither a module name"):
        resolve_targets(model(), {"Lineer": "x"}, default=None, types=[nn.Linear])
