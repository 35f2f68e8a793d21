"""MACs per inference, counted with torch's own FlopCounterMode (MACs = FLOPs / 2).

FlopCounterMode counts at the aten level, so it follows any architecture (residuals,
torchvision, transformers) without per-module rules. Operators it has no formula for (custom
integer kernels) are counted by modules that define ``macs(input_shape)``... none of torchslim's
do yet, so the figure is the dense FP32 equivalent, which is what MACs usually means.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from torchslim.data.protocol import ModelInput
from torchslim.modes import unfused_attention


@torch.inference_mode()
def count_macs(model: nn.Module, example: Any) -> int:
    """MACs of one forward pass on ``example`` (a tensor, tuple, or dict of kwargs).

    >>> from torchslim.models import create_model
    >>> count_macs(create_model("lenet300"), torch.zeros(1, 1, 28, 28))
    266200
    """
    model.eval()
    with unfused_attention(), FlopCounterMode(display=False) as fc:
        ModelInput.of(example)(model)
    return fc.get_total_flops() // 2
