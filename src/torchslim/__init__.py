"""torchslim: make trained PyTorch models smaller and faster, with every cost and gain measured.

One verb per task. Verbs import lazily so ``import torchslim`` stays fast:

>>> import torchslim
>>> torchslim.create_model("lenet5").__class__.__name__
'LeNet5'
"""

from __future__ import annotations

import importlib
from typing import Any

from torchslim._version import __version__
from torchslim.errors import TorchSlimError

_LAZY = {
    "create_model": "torchslim.models",
    "model_names": "torchslim.models",
    "load_dataset": "torchslim.data",
    "save_checkpoint": "torchslim.checkpoint",
    "load_checkpoint": "torchslim.checkpoint",
    "load_weights": "torchslim.checkpoint",
    "evaluate": "torchslim.measure",
    "TrainConfig": "torchslim.training",
    "DistillConfig": "torchslim.training",
    "fit": "torchslim.training",
    "quantize": "torchslim.quantization",
    "prune": "torchslim.pruning",
    "finetune": "torchslim.recovery",
    "compress": "torchslim.recipes",
    "export_onnx": "torchslim.export",
    "inspect": "torchslim.planning",
}

__all__ = ["TorchSlimError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'torchslim' has no attribute {name!r}")
