"""Checkpoint codecs for layer types structured pruning can reshape beyond torchslim's defaults.

The checkpoint already knows Conv2d, Linear, BatchNorm2d and LayerNorm; Torch-Pruning can also
shrink these, and a pruned model must rebuild from its checkpoint without pickling.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from torchslim.checkpoint import register_codec


def _conv_cfg(m: nn.Module) -> dict[str, Any]:
    return dict(
        in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
        stride=list(m.stride), padding=list(m.padding) if not isinstance(m.padding, str) else m.padding,
        dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
    )  # fmt: skip


def _bn_cfg(m: nn.Module) -> dict[str, Any]:
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)  # fmt: skip


def _register() -> None:
    register_codec("conv1d", nn.Conv1d, _conv_cfg, lambda c: nn.Conv1d(**c))
    register_codec("conv3d", nn.Conv3d, _conv_cfg, lambda c: nn.Conv3d(**c))
    register_codec("batchnorm1d", nn.BatchNorm1d, _bn_cfg, lambda c: nn.BatchNorm1d(**c))
    register_codec("batchnorm3d", nn.BatchNorm3d, _bn_cfg, lambda c: nn.BatchNorm3d(**c))
    register_codec(
        "groupnorm", nn.GroupNorm,
        lambda m: dict(num_groups=m.num_groups, num_channels=m.num_channels, eps=m.eps, affine=m.affine),
        lambda c: nn.GroupNorm(**c),
    )  # fmt: skip
    register_codec(
        "prelu", nn.PReLU, lambda m: dict(num_parameters=m.num_parameters), lambda c: nn.PReLU(**c)
    )
    register_codec(
        "embedding", nn.Embedding,
        lambda m: dict(num_embeddings=m.num_embeddings, embedding_dim=m.embedding_dim, padding_idx=m.padding_idx),
        lambda c: nn.Embedding(**c),
    )  # fmt: skip
    try:
        from torchvision.models.convnext import LayerNorm2d
    except ImportError:  # pragma: no cover - torchvision is a core dependency
        return
    register_codec(
        "tv_layernorm2d", LayerNorm2d,
        lambda m: dict(normalized_shape=list(m.normalized_shape), eps=m.eps, elementwise_affine=m.elementwise_affine),
        lambda c: LayerNorm2d(**c),
    )  # fmt: skip


_register()
