"""Deep Compression's stored form: layers whose only saved tensor is their packed, coded bytes.

:func:`huffman_code` turns every weight-shared layer into a :class:`CodedLinear` /
:class:`CodedConv2d`. Such a layer saves one ``uint8`` tensor, ``packed`` (see
:mod:`torchslim.compression.sparse_format`), and decodes it back into an ordinary frozen
``weight``/``bias`` when loaded, so the artifact is a regular torchslim checkpoint
(``save_checkpoint`` / ``load_checkpoint`` / ``torchslim eval``) and the reloaded model predicts
exactly what the shared model predicted.

>>> import torch, torch.nn as nn
>>> from torchslim.compression.shared import share_weights
>>> from torchslim.compression.config import WeightSharingConfig, HuffmanCodingConfig
>>> shared, _ = share_weights(nn.Sequential(nn.Linear(16, 8)), WeightSharingConfig(bits=3))
>>> coded, rep = huffman_code(shared, HuffmanCodingConfig(index_bits=4))
>>> x = torch.randn(2, 16)
>>> bool(torch.equal(coded(x), shared(x)))
True
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, ClassVar

import torch
import torch.nn as nn

from torchslim.checkpoint import register_codec
from torchslim.compression.config import HuffmanCodingConfig
from torchslim.compression.shared import SharedConv2d, SharedLinear, _SharedMixin
from torchslim.compression.sparse_format import LayerBits, pack_layer, unpack_layer
from torchslim.errors import CheckpointError, CompatibilityError
from torchslim.layer_report import Report
from torchslim.targets import resolve_targets


class _CodedMixin:
    """Saves ``packed`` only; loading it decodes the frozen dense weight and bias."""

    # Read by the speed guard (torchslim.measure.speed) when a model is not faster than FP32.
    speed_note: ClassVar[str] = ("Huffman-coded layers are decoded to dense FP32 weights once, at load, and compute "
                                 "exactly as FP32 layers do: the coding shrinks the file, not the compute")
    packed: torch.Tensor
    weight: nn.Parameter
    bias: nn.Parameter | None
    bits_stats: LayerBits | None

    def _init_coded(self, packed_bytes: int) -> None:
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.register_buffer("packed", torch.zeros(packed_bytes, dtype=torch.uint8))  # type: ignore[attr-defined]
        self.bits_stats = None

    def set_packed(self, data: bytes) -> None:
        self.packed = torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()
        self._decode()

    def _decode(self) -> None:
        bias_numel = self.bias.numel() if self.bias is not None else 0
        w, b, stats = unpack_layer(self.packed.numpy().tobytes(), self.weight.numel(), bias_numel)
        if (b is None) != (self.bias is None):
            raise CheckpointError("coded layer's bias presence differs from its configuration; corrupt artifact")
        with torch.no_grad():
            self.weight.copy_(w.view_as(self.weight))
            if b is not None and self.bias is not None:
                self.bias.copy_(b)
        self.bits_stats = stats

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        destination[prefix + "packed"] = self.packed if keep_vars else self.packed.detach()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:  # fmt: skip
        key = prefix + "packed"
        if key not in state_dict:
            missing_keys.append(key)
            return
        self.packed = state_dict[key].detach().to(torch.uint8).clone()
        try:
            self._decode()
        except CheckpointError as exc:
            raise CheckpointError(f"coded layer {prefix[:-1] or '(root)'}: {exc}") from exc
        if strict:
            for k in state_dict:
                if k.startswith(prefix) and k != key and "." not in k[len(prefix) :]:
                    unexpected_keys.append(k)


class CodedLinear(_CodedMixin, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, packed_bytes: int = 0) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_coded(packed_bytes)


class CodedConv2d(_CodedMixin, nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: list[int], stride: list[int],
                 padding: list[int] | str, dilation: list[int], groups: int = 1, bias: bool = True,
                 packed_bytes: int = 0) -> None:  # fmt: skip
        nn.Conv2d.__init__(
            self, in_channels, out_channels, tuple(kernel_size), tuple(stride),  # type: ignore[arg-type]
            padding if isinstance(padding, str) else tuple(padding), tuple(dilation), groups, bias,  # type: ignore[arg-type]
        )  # fmt: skip
        self._init_coded(packed_bytes)


def _linear_cfg(m: CodedLinear) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None,
            "packed_bytes": m.packed.numel()}  # fmt: skip


def _conv_cfg(m: CodedConv2d) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
        "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None, "packed_bytes": m.packed.numel(),
    }  # fmt: skip


register_codec("coded-linear", CodedLinear, _linear_cfg, lambda c: CodedLinear(**c))
register_codec("coded-conv2d", CodedConv2d, _conv_cfg, lambda c: CodedConv2d(**c))


AUTO_INDEX_BITS = range(2, 11)


def coded_from_shared(m: _SharedMixin, index_bits: int | str, use_huffman: bool = True) -> CodedLinear | CodedConv2d:
    """Pack one shared layer (its codebooks snapped to their storage dtype).

    ``index_bits="auto"`` packs with every width in 2..10 and keeps the smallest bytes.
    """
    m.round_codebooks()
    float16 = m.codebook_dtype == "float16"
    bias_cb = m.bias_codebook()

    def pack(ib: int) -> bytes:
        data, _ = pack_layer(
            m.indices, m.codebook().detach().cpu(), m.bits, ib,
            bias=m.bias_param.detach().cpu() if m.bias_param is not None else None,
            bias_indices=m.bias_indices if bias_cb is not None else None,
            bias_codebook=bias_cb.detach().cpu() if bias_cb is not None else None, bias_bits=m.bias_bits or 0,
            use_huffman=use_huffman, float16=float16,
        )  # fmt: skip
        return data

    data = min((pack(ib) for ib in AUTO_INDEX_BITS), key=len) if index_bits == "auto" else pack(int(index_bits))
    has_bias = m.bias is not None
    new: CodedLinear | CodedConv2d
    if isinstance(m, SharedLinear):
        new = CodedLinear(m.in_features, m.out_features, has_bias, len(data))
    else:
        assert isinstance(m, SharedConv2d)
        new = CodedConv2d(m.in_channels, m.out_channels, list(m.kernel_size), list(m.stride),
                          m.padding if isinstance(m.padding, str) else list(m.padding),  # type: ignore[arg-type]
                          list(m.dilation), m.groups, has_bias, len(data))  # fmt: skip
    new.set_packed(data)
    return new.eval() if not m.training else new


def huffman_code(
    model: nn.Module, config: HuffmanCodingConfig | None = None, *, inplace: bool = False
) -> tuple[nn.Module, Report]:
    """Pack every weight-shared layer (relative indices + Huffman codes); returns (model, report).

    The report's layers carry the paper's Table 2/3 figures (bits per weight and per index,
    before and after Huffman coding, and each layer's bytes).
    """
    config = config or HuffmanCodingConfig()
    shared = {n for n, m in model.named_modules() if isinstance(m, _SharedMixin)}
    if not shared:
        raise CompatibilityError(
            "huffman coding needs weight-shared layers (codebook indices to code); run weight sharing first"
        )
    index_bits = resolve_targets(model, config.layer_index_bits, default=config.index_bits, types=(SharedLinear, SharedConv2d))
    out = model if inplace else copy.deepcopy(model)
    report = Report("huffman_code", "huffman" if config.huffman else "fixed-width")
    for name in sorted(shared, key=list(dict(model.named_modules())).index):
        if name not in index_bits:
            report.add(name, type(model.get_submodule(name)).__name__, "skipped", "no index_bits for this layer")
            continue
        m = out.get_submodule(name)
        assert isinstance(m, _SharedMixin)
        new = coded_from_shared(m, index_bits[name], config.huffman)
        new.train(m.training)
        parent_name, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, attr, new)
        s = new.bits_stats
        assert s is not None
        report.add(name, type(m).__name__, "coded", "huffman" if config.huffman else "fixed-width",
                   before={"bytes_fp32": 4 * s.weights}, after={k: v for k, v in s.as_row(name).items() if k != "layer"})  # fmt: skip
    report.summary = {"layers": len(index_bits)}
    return out, report


def bits_table(model: nn.Module) -> list[dict[str, Any]]:
    """One row per coded layer, as in the paper's Tables 2 and 3, plus a total row."""
    rows: list[dict[str, Any]] = []
    tot: OrderedDict[str, int] = OrderedDict(weights=0, nonzero=0, entries=0, vh=0, gh=0, vf=0, gf=0, bytes=0)
    for name, m in model.named_modules():
        if isinstance(m, _CodedMixin) and m.bits_stats is not None:
            s = m.bits_stats
            rows.append(s.as_row(name))
            for k, v in (("weights", s.weights), ("nonzero", s.nonzero), ("entries", s.entries),
                         ("vh", s.value_bits_huffman), ("gh", s.gap_bits_huffman), ("vf", s.value_bits_fixed),
                         ("gf", s.gap_bits_fixed), ("bytes", s.total_bytes)):  # fmt: skip
                tot[k] += v
    if rows:
        e = max(tot["entries"], 1)
        rows.append({
            "layer": "total", "weights": tot["weights"], "kept_pct": round(100 * tot["nonzero"] / tot["weights"], 2),
            "weight_bits": round(tot["vf"] / e, 3), "weight_bits_huffman": round(tot["vh"] / e, 3),
            "index_bits": round(tot["gf"] / e, 3), "index_bits_huffman": round(tot["gh"] / e, 3),
            "filler_pct": round(100 * (tot["entries"] - tot["nonzero"]) / e, 2), "bytes": tot["bytes"],
            "compress_rate_pct": round(100 * tot["bytes"] / (4 * tot["weights"]), 3),
        })  # fmt: skip
    return rows
