"""Every torchvision classification model, by its torchvision name, with random weights.

Registered as ``tv/<name>`` (e.g. ``tv/resnet18``). Weights are never downloaded: ``weights=None``
always. Input is 3x224x224 (3x299x299 for inception_v3).
"""

from __future__ import annotations

import functools
from typing import Any

import torch.nn as nn

from torchslim.models.registry import register_model


def _build(tv_name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    import torchvision.models as tvm

    kwargs.setdefault("weights", None)
    if kwargs["weights"] is not None:
        from torchslim.errors import ConfigError

        raise ConfigError("torchslim never downloads torchvision weights; load a state dict with torchslim.load_weights")
    if tv_name in ("inception_v3", "googlenet"):
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    return tvm.get_model(tv_name, num_classes=num_classes, **kwargs)


def _register_all() -> None:
    import torchvision.models as tvm

    for tv_name in tvm.list_models(module=tvm):
        shape = (3, 299, 299) if tv_name == "inception_v3" else (3, 224, 224)
        register_model(
            f"tv/{tv_name}", family="torchvision", description=f"torchvision.models.{tv_name} (random init)",
            input_shape=shape,
        )(functools.partial(_build, tv_name))


_register_all()
