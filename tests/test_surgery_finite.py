"""Every verb refuses a model with NaN or infinite weights before any work, naming the tensor."""

import pytest
import torch

import torchslim
from torchslim.errors import ModelError
from torchslim.models import create_model
from torchslim.pruning import MagnitudeConfig
from torchslim.quantization import DynamicInt8Config
from torchslim.recovery import FinetuneConfig


def _broken():
    m = create_model("lenet300").eval()
    with torch.no_grad():
        m.fc2.weight[0, :3] = float("nan")
        m.fc3.bias[1] = float("inf")
    return m


@pytest.mark.parametrize("verb", ["quantize", "prune", "evaluate", "finetune", "export", "compress"])
def test_every_verb_refuses_non_finite_weights(verb, tmp_path, digits):
    m = _broken()
    calls = {
        "quantize": lambda: torchslim.quantize(m, DynamicInt8Config()),
        "prune": lambda: torchslim.prune(m, MagnitudeConfig(amount=0.5)),
        "evaluate": lambda: torchslim.evaluate(m, digits[2], latency_runs=1),
        "finetune": lambda: torchslim.finetune(m, FinetuneConfig(epochs=1), train_data=digits[0], val_data=digits[1]),
        "export": lambda: torchslim.export_onnx(m, tmp_path / "m.onnx", architecture="lenet300"),
        "compress": lambda: torchslim.compress(m, [{"type": "evaluate"}], data=digits[2], out=tmp_path / "o", quiet=True),
    }
    with pytest.raises(ModelError, match=r"fc2.weight \(3 of 30000\), fc3.bias \(1 of 10\); it is broken"):
        calls[verb]()
    assert list(tmp_path.iterdir()) == []
