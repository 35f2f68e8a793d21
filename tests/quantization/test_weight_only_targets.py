"""Weight-only quantization with a bit width per layer through the one targeting rule."""

import pytest
import torch

from torchslim.errors import TargetError
from torchslim.models import create_model
from torchslim.quantization import WeightOnlyConfig, quantize


def test_targets_give_each_layer_its_bits():
    model = create_model("lenet300", num_classes=10)
    q, report = quantize(model, WeightOnlyConfig(bits=8), targets={"fc1": 4, "fc3": None})
    assert q.fc1.bits == 4 and q.fc2.bits == 8 and isinstance(q.fc3, torch.nn.Linear)
    actions = {e.name: e.action for e in report.layers}
    assert actions == {"fc1": "int4-weight-only", "fc2": "int8-weight-only", "fc3": "skipped"}
    x = torch.randn(4, 1, 28, 28)
    ref = model(x)
    all8, _ = quantize(model, WeightOnlyConfig(bits=8))
    err_mixed = float((q(x) - ref).norm() / ref.norm())
    err_8 = float((all8(x) - ref).norm() / ref.norm())
    assert err_8 < 0.02 < err_mixed < 0.15  # the INT4 layer costs fidelity, the INT8 ones little
    assert isinstance(model.fc1, torch.nn.Linear)  # the user's model is unchanged


def test_a_bit_width_that_is_not_4_or_8_is_refused():
    with pytest.raises(TargetError, match="fc1: 3 is not a weight-only bit width; give 4 or 8"):
        quantize(create_model("lenet300", num_classes=10), WeightOnlyConfig(), targets={"fc1": 3})
