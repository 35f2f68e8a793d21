"""pruning._common.profile: MACs per layer from one forward pass, for any form of example."""

import torch
import torch.nn as nn

from torchslim.data.protocol import ModelInput
from torchslim.pruning._common import profile


def test_profile_takes_a_model_input_a_tensor_or_keyword_arguments():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()
    x = torch.randn(1, 3, 4, 4)
    expected = 8 * 16 * 27 + 128 * 10  # conv: out pixels x kernel MACs; linear: in x out
    for example in (x, (x,), ModelInput((x,))):
        p = profile(model, example)
        assert p.macs == expected
        assert p.layer_macs == {"0": 8 * 16 * 27, "3": 1280} and p.output_layers == ["3"]
    assert profile(model, None).macs is None
