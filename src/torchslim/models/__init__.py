"""Model registry: LeNets, CIFAR-style ResNets, every torchvision classifier, HF encoders."""

from torchslim.models.registry import (
    ModelEntry,
    create_model,
    get_entry,
    model_names,
    register_model,
)

__all__ = ["ModelEntry", "create_model", "get_entry", "model_names", "register_model"]
