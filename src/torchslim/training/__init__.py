"""The one training loop (baseline training and fine-tuning), resumable and distributed."""

from torchslim.training.config import DistillConfig, TrainConfig
from torchslim.training.loop import Callback, TrainResult, fit, init_distributed

__all__ = ["Callback", "DistillConfig", "TrainConfig", "TrainResult", "fit", "init_distributed"]
