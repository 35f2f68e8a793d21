"""The packed bytes of one Deep-Compression-coded layer, and how their bits are spent.

A layer's weight is stored as Deep Compression stores it (Han et al., 2016, section 3 and
Figure 2): walking the flattened weight, each non-zero is one *entry* holding

* its codebook index (``bits`` wide before Huffman coding; index 0 is the fixed value 0), and
* the gap to the previous entry (``index_bits`` wide, ``1..2**index_bits``). A gap longer than
  that is bridged by *filler zeros*: entries of gap ``2**index_bits`` whose codebook index is 0.

Both symbol streams are then Huffman coded (canonical codes, so only the code lengths are
stored, 4 bits per symbol of the alphabet). With ``huffman=False`` the same layout holds
fixed-width codes, which is the paper's "pruned + quantized" stage. A layer without zeros
(every gap 1) stores no gap stream at all.

Layout, little-endian::

    u8 flags (1 huffman, 2 float16 codebook, 4 has bias, 8 bias shared, 16 dense: no gap stream)
    u8 bits, u8 index_bits, u8 bias_bits, u32 entries, u32 value_nbits, u32 gap_nbits
    codebook[2**bits - 1], value code lengths[2**bits] (nibbles), gap code lengths[2**index_bits]
    value stream, gap stream
    bias: shared -> codebook[2**bias_bits - 1], lengths, u32 nbits, stream; else float values
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from torchslim.compression import huffman
from torchslim.errors import CheckpointError

_HEAD = struct.Struct("<BBBBIII")
F_HUFFMAN, F_FP16, F_BIAS, F_BIAS_SHARED, F_DENSE = 1, 2, 4, 8, 16


@dataclass
class LayerBits:
    """How many bits one layer's storage spends (one row of the paper's Table 2/3)."""

    weights: int  # elements of the dense weight
    nonzero: int
    entries: int  # stored entries: non-zeros plus filler zeros
    bits: int  # codebook index width before Huffman coding
    index_bits: int
    value_bits_fixed: int  # total bits of the index stream, fixed width
    value_bits_huffman: int
    gap_bits_fixed: int
    gap_bits_huffman: int
    overhead_bytes: int  # codebook, code tables, header, bias
    total_bytes: int  # what the layer occupies in the artifact

    @property
    def kept(self) -> float:
        return self.nonzero / self.weights if self.weights else 0.0

    def as_row(self, name: str) -> dict[str, float | int | str]:
        e = max(self.entries, 1)
        return {
            "layer": name,
            "weights": self.weights,
            "kept_pct": round(100 * self.kept, 2),
            "weight_bits": self.bits,
            "weight_bits_huffman": round(self.value_bits_huffman / e, 3),
            "index_bits": self.index_bits,
            "index_bits_huffman": round(self.gap_bits_huffman / e, 3),
            "filler_pct": round(100 * (self.entries - self.nonzero) / e, 2),
            "bytes": self.total_bytes,
            "compress_rate_pct": round(100 * self.total_bytes / (4 * self.weights), 3) if self.weights else 0.0,
        }


def sparse_entries(indices: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(codebook index, gap symbol) per entry of the flattened ``indices`` (0 = zero weight).

    Gap symbol ``g`` means "``g + 1`` positions after the previous entry"; the walk starts at -1.

    >>> v, g = sparse_entries(np.array([0, 3, 0, 0, 0, 0, 0, 2]), 2)
    >>> v.tolist(), g.tolist()
    ([3, 0, 2], [1, 3, 1])
    """
    pos = np.flatnonzero(indices)
    span = 1 << index_bits
    gaps = np.diff(np.concatenate([[-1], pos]))
    fillers = (gaps - 1) // span  # fillers needed before each non-zero
    n = len(pos) + int(fillers.sum())
    values = np.zeros(n, dtype=np.int64)
    gsyms = np.full(n, span - 1, dtype=np.int64)
    at = np.arange(len(pos)) + np.cumsum(fillers)  # where each real entry lands
    values[at] = indices[pos]
    gsyms[at] = gaps - fillers * span - 1
    return values, gsyms


def dense_from_entries(values: list[int] | np.ndarray, gsyms: list[int] | np.ndarray, numel: int) -> np.ndarray:
    """Inverse of :func:`sparse_entries`: the flat codebook-index array of ``numel`` elements."""
    v = np.asarray(values, dtype=np.int64)
    pos = np.cumsum(np.asarray(gsyms, dtype=np.int64) + 1) - 1
    out = np.zeros(numel, dtype=np.int64)
    if len(pos) and (pos[-1] >= numel or pos.min() < 0):
        raise CheckpointError(f"coded layer addresses position {int(pos[-1])} of a {numel}-element weight; corrupt artifact")
    out[pos] = v
    return out


def _nibbles(lengths: list[int]) -> bytes:
    a = np.asarray(lengths + [0] * (len(lengths) % 2), dtype=np.uint8)
    return (a[0::2] << 4 | a[1::2]).astype(np.uint8).tobytes()


def _unnibbles(data: bytes, n: int) -> list[int]:
    a = np.frombuffer(data, dtype=np.uint8)
    return np.stack([a >> 4, a & 15], 1).reshape(-1)[:n].astype(np.int64).tolist()


def _stream_lengths(symbols: np.ndarray, alphabet: int, width: int, use_huffman: bool) -> list[int]:
    if not use_huffman:
        return huffman.fixed_lengths(alphabet, width)
    return huffman.code_lengths(np.bincount(symbols, minlength=alphabet).tolist())


def _huffman_bits(symbols: np.ndarray, alphabet: int) -> int:
    # What the stream costs Huffman coded, whether or not this artifact is (for the bits tables).
    return huffman.encoded_bits(symbols, huffman.code_lengths(np.bincount(symbols, minlength=alphabet).tolist()))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise CheckpointError(f"coded layer needs {self.at + n} bytes but holds {len(self.data)}; truncated artifact")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out


def pack_layer(
    indices: torch.Tensor,
    codebook: torch.Tensor,
    bits: int,
    index_bits: int,
    *,
    bias: torch.Tensor | None = None,
    bias_indices: torch.Tensor | None = None,
    bias_codebook: torch.Tensor | None = None,
    bias_bits: int = 0,
    use_huffman: bool = True,
    float16: bool = True,
) -> tuple[bytes, LayerBits]:
    """Pack one layer. ``codebook[0]`` must be 0; ``codebook[1:]`` holds the ``2**bits - 1`` centroids."""
    k = 1 << bits
    if codebook.numel() != k or float(codebook[0]) != 0.0:
        raise ValueError(f"codebook must have {k} entries with entry 0 == 0")
    flat = indices.detach().flatten().to(torch.int64).numpy()
    values, gsyms = sparse_entries(flat, index_bits)
    dense = bool((gsyms == 0).all())  # no zeros: positions are implied, store no gaps
    vlen = _stream_lengths(values, k, bits, use_huffman)
    glen = _stream_lengths(gsyms, 1 << index_bits, index_bits, use_huffman)
    vdata, vnbits = huffman.encode(values, vlen)
    gdata, gnbits = (b"", 0) if dense else huffman.encode(gsyms, glen)
    fdt = np.float16 if float16 else np.float32
    flags = (F_HUFFMAN if use_huffman else 0) | (F_FP16 if float16 else 0) | (F_DENSE if dense else 0)
    tail = b""
    if bias is not None or bias_indices is not None:
        flags |= F_BIAS
        if bias_indices is not None:
            assert bias_codebook is not None and bias_codebook.numel() == 1 << bias_bits
            flags |= F_BIAS_SHARED
            bsym = bias_indices.detach().flatten().to(torch.int64).numpy()
            blen = _stream_lengths(bsym, 1 << bias_bits, bias_bits, use_huffman)
            bdata, bnbits = huffman.encode(bsym, blen)
            tail = (
                bias_codebook[1:].detach().numpy().astype(fdt).tobytes()
                + (_nibbles(blen) if use_huffman else b"")
                + struct.pack("<I", bnbits)
                + bdata
            )
        else:
            assert bias is not None
            tail = bias.detach().numpy().astype(np.float32).tobytes()
    body = (
        _HEAD.pack(flags, bits, index_bits, bias_bits, len(values), vnbits, gnbits)
        + codebook[1:].detach().numpy().astype(fdt).tobytes()
        + (_nibbles(vlen) if use_huffman else b"")
        + (_nibbles(glen) if use_huffman and not dense else b"")
        + vdata
        + gdata
        + tail
    )
    stats = LayerBits(
        weights=flat.size, nonzero=int((flat != 0).sum()), entries=len(values), bits=bits, index_bits=index_bits,
        value_bits_fixed=len(values) * bits, value_bits_huffman=_huffman_bits(values, k),
        gap_bits_fixed=0 if dense else len(values) * index_bits,
        gap_bits_huffman=0 if dense else _huffman_bits(gsyms, 1 << index_bits),
        overhead_bytes=len(body) - len(vdata) - len(gdata), total_bytes=len(body),
    )  # fmt: skip
    return body, stats


def unpack_layer(data: bytes, numel: int, bias_numel: int) -> tuple[torch.Tensor, torch.Tensor | None, LayerBits]:
    """Decode :func:`pack_layer`'s bytes: (flat float32 weight, bias or None, bit statistics)."""
    r = _Reader(data)
    flags, bits, index_bits, bias_bits, entries, vnbits, gnbits = _HEAD.unpack(r.take(_HEAD.size))
    fdt = np.float16 if flags & F_FP16 else np.float32
    k = 1 << bits
    use_huffman = bool(flags & F_HUFFMAN)
    centroids = np.frombuffer(r.take((k - 1) * np.dtype(fdt).itemsize), dtype=fdt).astype(np.float32)
    dense = bool(flags & F_DENSE)
    vlen = _unnibbles(r.take((k + 1) // 2), k) if use_huffman else huffman.fixed_lengths(k, bits)
    if dense:
        glen = []
    elif use_huffman:
        glen = _unnibbles(r.take(((1 << index_bits) + 1) // 2), 1 << index_bits)
    else:
        glen = huffman.fixed_lengths(1 << index_bits, index_bits)
    values = huffman.decode(r.take((vnbits + 7) // 8), entries, vlen)
    gsyms = [0] * entries if dense else huffman.decode(r.take((gnbits + 7) // 8), entries, glen)
    idx = dense_from_entries(values, gsyms, numel)
    table = np.concatenate([[0.0], centroids]).astype(np.float32)
    weight = torch.from_numpy(table[idx])
    bias = None
    if flags & F_BIAS:
        if flags & F_BIAS_SHARED:
            kb = 1 << bias_bits
            bc = np.frombuffer(r.take((kb - 1) * np.dtype(fdt).itemsize), dtype=fdt).astype(np.float32)
            blen = _unnibbles(r.take((kb + 1) // 2), kb) if use_huffman else huffman.fixed_lengths(kb, bias_bits)
            (bnbits,) = struct.unpack("<I", r.take(4))
            bsym = huffman.decode(r.take((bnbits + 7) // 8), bias_numel, blen)
            bias = torch.from_numpy(np.concatenate([[0.0], bc]).astype(np.float32)[np.asarray(bsym, dtype=np.int64)])
        else:
            bias = torch.from_numpy(np.frombuffer(r.take(4 * bias_numel), dtype=np.float32).copy())
    if r.at != len(data):
        raise CheckpointError(f"coded layer has {len(data) - r.at} unread trailing bytes; corrupt artifact")
    stats = LayerBits(
        weights=numel, nonzero=int((idx != 0).sum()), entries=entries, bits=bits, index_bits=index_bits,
        value_bits_fixed=entries * bits, value_bits_huffman=_huffman_bits(np.asarray(values, dtype=np.int64), k),
        gap_bits_fixed=0 if dense else entries * index_bits,
        gap_bits_huffman=0 if dense else _huffman_bits(np.asarray(gsyms, dtype=np.int64), 1 << index_bits), overhead_bytes=len(data) - (vnbits + 7) // 8 - (gnbits + 7) // 8,
        total_bytes=len(data),
    )  # fmt: skip
    return weight, bias, stats
