"""Checkpoint codecs for layer types structured pruning can reshape beyond torchslim's defaults.

The checkpoint already knows Conv2d, Linear, BatchNorm2d and LayerNorm; Torch-Pruning can also
shrink these (recurrent layers' input and hidden sizes, attention's embedding size...), and a
pruned model must rebuild from its checkpoint without pickling. Parameters of other modules
(a ConvNeXt layer scale) need no codec: the checkpoint records their shapes.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from torchslim.checkpoint import register_codec

_Conv = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.ConvTranspose1d | nn.ConvTranspose2d


def _conv_cfg(m: _Conv) -> dict[str, Any]:
    return dict(
        in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
        stride=list(m.stride), padding=list(m.padding) if not isinstance(m.padding, str) else m.padding,
        dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
    )  # fmt: skip


def _bn_cfg(m: nn.Module) -> dict[str, Any]:
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)  # fmt: skip


def _convt_cfg(m: nn.ConvTranspose1d | nn.ConvTranspose2d) -> dict[str, Any]:
    return {**_conv_cfg(m), "output_padding": list(m.output_padding)}


def _rnn_cfg(m: nn.RNNBase) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(
        input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers, bias=m.bias,
        batch_first=m.batch_first, dropout=float(m.dropout), bidirectional=m.bidirectional,
    )  # fmt: skip
    if isinstance(m, nn.LSTM):
        cfg["proj_size"] = m.proj_size
    if isinstance(m, nn.RNN):
        cfg["nonlinearity"] = m.nonlinearity
    return cfg


def _mha_cfg(m: nn.MultiheadAttention) -> dict[str, Any]:
    return dict(
        embed_dim=m.embed_dim, num_heads=m.num_heads, dropout=m.dropout, bias=m.in_proj_bias is not None,
        add_bias_kv=m.bias_k is not None, add_zero_attn=m.add_zero_attn, kdim=m.kdim, vdim=m.vdim,
        batch_first=m.batch_first,
    )  # fmt: skip


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
    register_codec("conv_transpose1d", nn.ConvTranspose1d, _convt_cfg, lambda c: nn.ConvTranspose1d(**c))
    register_codec("conv_transpose2d", nn.ConvTranspose2d, _convt_cfg, lambda c: nn.ConvTranspose2d(**c))
    register_codec("instancenorm1d", nn.InstanceNorm1d, _bn_cfg, lambda c: nn.InstanceNorm1d(**c))
    register_codec("instancenorm2d", nn.InstanceNorm2d, _bn_cfg, lambda c: nn.InstanceNorm2d(**c))
    register_codec("lstm", nn.LSTM, _rnn_cfg, lambda c: nn.LSTM(**c))
    register_codec("gru", nn.GRU, _rnn_cfg, lambda c: nn.GRU(**c))
    register_codec("rnn", nn.RNN, _rnn_cfg, lambda c: nn.RNN(**c))
    register_codec("multihead_attention", nn.MultiheadAttention, _mha_cfg, lambda c: nn.MultiheadAttention(**c))
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
