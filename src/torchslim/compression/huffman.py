"""Canonical Huffman coding of small integer alphabets (codebook indices, index gaps).

Written here rather than taken from a library: the standard library's ``zlib``/``lzma`` code
bytes, not our symbols, and Deep Compression needs per-stream code lengths it can report as
"bits per weight" / "bits per index" (the paper's Tables 2 and 3). Codes are *canonical*, so a
stream is described by its code lengths alone (one 4-bit length per symbol, lengths <= 15), and
a fixed-width code is the special case where every length equals the bit width.

>>> lengths = code_lengths([8, 4, 2, 1, 1])
>>> lengths
[1, 2, 3, 4, 4]
>>> data, nbits = encode([0, 0, 4, 1], lengths)
>>> decode(data, 4, lengths)
[0, 0, 4, 1]
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from torchslim.errors import CheckpointError

MAX_LENGTH = 15


def code_lengths(freqs: Sequence[int], max_length: int = MAX_LENGTH) -> list[int]:
    """Huffman code length of each symbol (0 for symbols that never occur).

    A lone used symbol gets length 1. If the optimal code is deeper than ``max_length``, the
    frequencies are halved (keeping every used symbol >= 1) until it fits: the usual trick of
    zlib-style coders; it costs a fraction of a bit only on extremely skewed streams.
    """
    freqs = [int(f) for f in freqs]
    if any(f < 0 for f in freqs):
        raise ValueError("frequencies must be >= 0")
    used = [i for i, f in enumerate(freqs) if f > 0]
    if len(used) > 2**max_length:
        raise ValueError(f"{len(used)} symbols cannot fit codes of at most {max_length} bits")
    out = [0] * len(freqs)
    if not used:
        return out
    if len(used) == 1:
        out[used[0]] = 1
        return out
    work = list(freqs)
    while True:
        lengths = _huffman_lengths({i: work[i] for i in used})
        if max(lengths.values()) <= max_length:
            break
        work = [max(1, f // 2) if f > 0 else 0 for f in work]
    for i, n in lengths.items():
        out[i] = n
    return out


def _huffman_lengths(freqs: dict[int, int]) -> dict[int, int]:
    # Heap of (weight, tie-break, symbols); merging two subtrees deepens all their symbols by one.
    heap = [(f, i, [s]) for i, (s, f) in enumerate(sorted(freqs.items()))]
    heapq.heapify(heap)
    depth = dict.fromkeys(freqs, 0)
    tie = len(heap)
    while len(heap) > 1:
        f1, _, s1 = heapq.heappop(heap)
        f2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (f1 + f2, tie, s1 + s2))
        tie += 1
    return depth


def canonical_codes(lengths: Sequence[int]) -> list[int]:
    """The canonical code of each symbol: shorter codes first, ties by symbol order."""
    codes = [0] * len(lengths)
    code = 0
    prev = 0
    for n, s in sorted((n, s) for s, n in enumerate(lengths) if n > 0):
        code <<= n - prev
        codes[s] = code
        code += 1
        prev = n
    if code > (1 << prev) and prev:
        raise ValueError("code lengths violate the Kraft inequality")
    return codes


def fixed_lengths(alphabet: int, bits: int) -> list[int]:
    """Lengths of a fixed-width ``bits``-bit code (the stream before Huffman coding)."""
    return [bits] * alphabet


def encoded_bits(symbols: Sequence[int] | np.ndarray, lengths: Sequence[int]) -> int:
    """Length in bits of ``symbols`` under ``lengths`` (no encoding done)."""
    counts = np.bincount(np.asarray(symbols, dtype=np.int64), minlength=len(lengths))
    return int((counts * np.asarray(lengths, dtype=np.int64)).sum())


def encode(symbols: Sequence[int] | np.ndarray, lengths: Sequence[int]) -> tuple[bytes, int]:
    """Pack ``symbols`` with the canonical code of ``lengths``; returns (bytes, number of bits)."""
    syms = np.asarray(symbols, dtype=np.int64)
    if syms.size == 0:
        return b"", 0
    lens = np.asarray(lengths, dtype=np.int64)
    if syms.min() < 0 or syms.max() >= len(lens) or (lens[syms] == 0).any():
        raise ValueError("a symbol has no code (length 0 or outside the alphabet)")
    codes = np.asarray(canonical_codes(lengths), dtype=np.int64)
    # Expand each symbol's code into its bits, most significant first, all at once.
    sym_len = lens[syms]
    total = int(sym_len.sum())
    ends = np.cumsum(sym_len)
    starts = ends - sym_len
    owner = np.repeat(np.arange(syms.size), sym_len)
    bit_in_code = np.arange(total) - starts[owner]
    shift = sym_len[owner] - 1 - bit_in_code
    bits = ((codes[syms][owner] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits).tobytes(), total


def decode(data: bytes, count: int, lengths: Sequence[int]) -> list[int]:
    """Read ``count`` symbols coded with the canonical code of ``lengths`` from ``data``."""
    if count == 0:
        return []
    used = [n for n in lengths if n > 0]
    if not used:
        raise CheckpointError("Huffman table is empty but the stream has symbols")
    width = max(used)
    codes = canonical_codes(lengths)
    # Lookup table over every ``width``-bit window: the symbol whose code prefixes it, and its length.
    lut_sym = np.full(1 << width, -1, dtype=np.int64)
    lut_len = np.zeros(1 << width, dtype=np.int64)
    for s, n in enumerate(lengths):
        if n:
            lo = codes[s] << (width - n)
            lut_sym[lo : lo + (1 << (width - n))] = s
            lut_len[lo : lo + (1 << (width - n))] = n
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
    bits = np.concatenate([bits, np.zeros(width, dtype=np.int64)])
    # windows[i] = the ``width`` bits starting at bit i, as an integer.
    n = len(bits) - width
    windows = np.zeros(n, dtype=np.int64)
    for j in range(width):
        windows = (windows << 1) | bits[j : j + n]
    win = windows.tolist()
    syms = lut_sym.tolist()
    lens = lut_len.tolist()
    out = [0] * count
    pos = 0
    try:
        for k in range(count):
            w = win[pos]
            out[k] = syms[w]
            pos += lens[w]
    except IndexError as exc:
        raise CheckpointError(f"Huffman stream ended after {k} of {count} symbols; the artifact is truncated") from exc
    if pos > n or min(out) < 0:
        raise CheckpointError("Huffman stream is corrupt (a bit pattern matches no code)")
    return out
