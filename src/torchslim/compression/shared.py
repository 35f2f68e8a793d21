"""Trained weight sharing: each layer's weights become indices into a small k-means codebook.

The shared layers compute ``weight = codebook[indices]`` in every forward pass, with the
codebook a trainable parameter. Autograd of that gather *is* Deep Compression's centroid update
(section 3.1): the gradient of a centroid is the sum of the gradients of every weight in its
cluster, so fine-tuning with the project's one training loop trains the codebook. Index 0 of
every codebook is the fixed value 0 (pruned weights and filler zeros); it takes no gradient.

>>> import torch.nn as nn
>>> from torchslim.compression.config import WeightSharingConfig
>>> m, rep = share_weights(nn.Sequential(nn.Linear(8, 4)), WeightSharingConfig(bits=2))
>>> int(m[0].weight.unique().numel()) <= 4
True
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.checkpoint import register_codec
from torchslim.compression.config import WeightSharingConfig
from torchslim.compression.kmeans import kmeans_1d
from torchslim.errors import CompatibilityError, TargetError
from torchslim.layer_report import Report
from torchslim.targets import resolve_targets

SHAREABLE = (nn.Linear, nn.Conv2d)


def _index_dtype(bits: int) -> torch.dtype:
    return torch.uint8 if bits <= 8 else torch.int16


class _SharedMixin(nn.Module):
    """Codebook parameters + index buffers; the dense weight is gathered on the fly."""

    # Read by the speed guard (torchslim.measure.speed) when a model is not faster than FP32.
    speed_note: ClassVar[str] = ("weight-shared layers rebuild their FP32 weights from the codebook (a gather over "
                                 "every weight) on every forward; Huffman coding (a huffman_coding step) decodes "
                                 "them once, at load, instead")
    bits: int
    bias_bits: int | None
    codebook_dtype: str

    def _init_shared(self, weight_shape: tuple[int, ...], bias_numel: int | None, bits: int, bias_bits: int | None,
                     codebook_dtype: str) -> None:  # fmt: skip
        self.bits, self.bias_bits, self.codebook_dtype = bits, bias_bits, codebook_dtype
        self.centroids = nn.Parameter(torch.zeros((1 << bits) - 1))
        self.register_buffer("indices", torch.zeros(weight_shape, dtype=_index_dtype(bits)))
        self.bias_centroids: nn.Parameter | None = None
        self.bias_param: nn.Parameter | None = None
        if bias_numel is not None and bias_bits is not None:
            self.bias_centroids = nn.Parameter(torch.zeros((1 << bias_bits) - 1))
            self.register_buffer("bias_indices", torch.zeros(bias_numel, dtype=_index_dtype(bias_bits)))
        elif bias_numel is not None:
            self.bias_param = nn.Parameter(torch.zeros(bias_numel))

    def codebook(self) -> torch.Tensor:
        """The full codebook, entry 0 being the fixed zero."""
        return torch.cat([self.centroids.new_zeros(1), self.centroids])

    def bias_codebook(self) -> torch.Tensor | None:
        if self.bias_centroids is None:
            return None
        return torch.cat([self.bias_centroids.new_zeros(1), self.bias_centroids])

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self.codebook()[self.indices.long()]

    @property
    def bias(self) -> torch.Tensor | None:  # type: ignore[override]
        cb = self.bias_codebook()
        if cb is not None:
            return cb[self.bias_indices.long()]
        return self.bias_param

    def round_codebooks(self) -> None:
        """Snap the centroids to the storage dtype, so the coded artifact predicts identically."""
        if self.codebook_dtype == "float16":
            with torch.no_grad():
                for p in (self.centroids, self.bias_centroids):
                    if p is not None:
                        p.copy_(p.half().float())

    def set_from(self, weight: torch.Tensor, bias: torch.Tensor | None, init: str, iters: int) -> dict[str, float]:
        """Cluster ``weight``'s non-zeros (and ``bias``) into the codebooks; returns error figures."""
        w = weight.detach().float()
        nz = w != 0
        k = (1 << self.bits) - 1
        cent, idx = kmeans_1d(w[nz], k, init=init, iters=iters)  # type: ignore[arg-type]
        full = torch.zeros(k)
        full[: cent.numel()] = cent
        indices = torch.zeros(w.shape, dtype=torch.long)
        indices[nz] = idx + 1
        with torch.no_grad():
            self.centroids.copy_(full)
            self.indices.copy_(indices.to(self.indices.dtype))
            if bias is not None and self.bias_centroids is not None:
                kb = (1 << self.bias_bits) - 1  # type: ignore[operator]
                b = bias.detach().float()
                bc, bidx = kmeans_1d(b, kb, init=init, iters=iters)  # type: ignore[arg-type]
                fb = torch.zeros(kb)
                fb[: bc.numel()] = bc
                self.bias_centroids.copy_(fb)
                self.bias_indices.copy_((bidx + 1).to(self.bias_indices.dtype))
            elif bias is not None and self.bias_param is not None:
                self.bias_param.copy_(bias.detach())
        self.round_codebooks()
        with torch.no_grad():
            err = (self.weight - w)[nz]
        return {
            "clusters": int(cent.numel()),
            "rmse": float(err.pow(2).mean().sqrt()) if err.numel() else 0.0,
            "rel_error": float(err.norm() / w[nz].norm().clamp(min=1e-12)) if err.numel() else 0.0,
        }


class SharedLinear(_SharedMixin):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 5,
                 bias_bits: int | None = 8, codebook_dtype: str = "float16") -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_shared((out_features, in_features), out_features if bias else None, bits, bias_bits, codebook_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bits={self.bits}, bias_bits={self.bias_bits}"


class SharedConv2d(_SharedMixin):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: list[int], stride: list[int],
                 padding: list[int] | str, dilation: list[int], groups: int = 1, bias: bool = True, bits: int = 8,
                 bias_bits: int | None = 8, codebook_dtype: str = "float16") -> None:  # fmt: skip
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = tuple(kernel_size), tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init_shared(shape, out_channels if bias else None, bits, bias_bits, codebook_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bits={self.bits}"


def _shared_cfg(m: _SharedMixin) -> dict[str, Any]:
    extra = {"bits": m.bits, "bias_bits": m.bias_bits, "codebook_dtype": m.codebook_dtype,
             "bias": m.bias_centroids is not None or m.bias_param is not None}  # fmt: skip
    if isinstance(m, SharedLinear):
        return {"in_features": m.in_features, "out_features": m.out_features, **extra}
    assert isinstance(m, SharedConv2d)
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
        "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation), "groups": m.groups, **extra,
    }  # fmt: skip


register_codec("shared-linear", SharedLinear, _shared_cfg, lambda c: SharedLinear(**c))
register_codec("shared-conv2d", SharedConv2d, _shared_cfg, lambda c: SharedConv2d(**c))


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _effective(m: nn.Module, attr: str) -> torch.Tensor | None:
    # Works under torch.nn.utils.prune's reparametrisation too (weight = weight_orig * mask).
    t = getattr(m, attr, None)
    return t.detach() if isinstance(t, torch.Tensor) else None


def share_weights(
    model: nn.Module, config: WeightSharingConfig | None = None, *, inplace: bool = False
) -> tuple[nn.Module, Report]:
    """Replace each targeted Linear/Conv2d by its k-means-shared version; returns (model, report).

    The returned model is a deep copy unless ``inplace``. Fine-tune it afterwards (e.g.
    ``torchslim.training.fit``) to train the centroids.
    """
    config = config or WeightSharingConfig()
    done = [n for n, m in model.named_modules() if isinstance(m, _SharedMixin) or type(m).__name__.startswith("Coded")]
    if done:
        raise CompatibilityError(f"layers {done[:4]} are already weight-shared; share a model once")
    bits_of = resolve_targets(model, config.layer_bits, default=config.bits, types=SHAREABLE)
    modules = dict(model.named_modules())
    for name in bits_of:
        m = modules[name]
        if not isinstance(m, SHAREABLE):
            raise TargetError(f"layer {name} is a {type(m).__name__}; weight sharing handles Linear and Conv2d")
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise TargetError(f"layer {name}: padding_mode={m.padding_mode!r} is not supported by weight sharing")
    out = model if inplace else copy.deepcopy(model)
    report = Report("share_weights", f"k-means ({config.init} init)")
    for name, bits in bits_of.items():
        m = out.get_submodule(name)
        w, b = _effective(m, "weight"), _effective(m, "bias")
        assert w is not None
        if isinstance(m, nn.Linear):
            new: _SharedMixin = SharedLinear(m.in_features, m.out_features, b is not None, bits, config.bias_bits,
                                             config.codebook_dtype)  # fmt: skip
        else:
            assert isinstance(m, nn.Conv2d)
            new = SharedConv2d(
                m.in_channels, m.out_channels, list(m.kernel_size), list(m.stride),
                m.padding if isinstance(m.padding, str) else list(m.padding), list(m.dilation), m.groups,
                b is not None, bits, config.bias_bits, config.codebook_dtype,
            )  # fmt: skip
        stats = new.set_from(w, b, config.init, config.kmeans_iters)
        new.to(w.device)
        new.train(m.training)
        _set_module(out, name, new)
        nz = int((w != 0).sum())
        report.add(
            name, type(m).__name__, "shared", f"{1 << bits} entries (entry 0 = zero), {config.codebook_dtype} codebook",
            before={"bits": 32, "nonzero": nz}, after={"bits": bits, "clusters": stats["clusters"], "rmse": stats["rmse"],
                                                       "rel_error": stats["rel_error"]},
        )  # fmt: skip
    report.summary = {"layers": len(bits_of)}
    return out, report


def round_codebooks(model: nn.Module) -> None:
    """Snap every shared layer's centroids to its storage dtype (call after fine-tuning)."""
    for m in model.modules():
        if isinstance(m, _SharedMixin):
            m.round_codebooks()
