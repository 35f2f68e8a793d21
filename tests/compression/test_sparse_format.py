import numpy as np
import pytest
import torch

from torchslim.compression.sparse_format import (
    dense_from_entries,
    pack_layer,
    sparse_entries,
    unpack_layer,
)
from torchslim.errors import CheckpointError


def test_relative_index_with_filler_zeros_as_in_the_paper():
    # Figure 2 of Han et al.: 3-bit gaps (span 8); a gap of 19 needs two filler zeros.
    idx = np.zeros(40, dtype=np.int64)
    idx[[1, 4, 23, 24]] = [5, 2, 7, 1]
    values, gaps = sparse_entries(idx, 3)
    assert values.tolist() == [5, 2, 0, 0, 7, 1]
    assert (gaps + 1).tolist() == [2, 3, 8, 8, 3, 1]
    assert np.array_equal(dense_from_entries(values, gaps, 40), idx)


@pytest.mark.parametrize("index_bits", [1, 3, 5, 8])
def test_entries_round_trip_random_sparsity(index_bits):
    rng = np.random.default_rng(index_bits)
    idx = np.where(rng.random(5000) < 0.07, rng.integers(1, 32, 5000), 0)
    values, gaps = sparse_entries(idx, index_bits)
    assert gaps.max() < 2**index_bits
    assert int((values != 0).sum()) == int((idx != 0).sum())
    assert np.array_equal(dense_from_entries(values, gaps, idx.size), idx)


def _layer(seed=0, n=(40, 30), bits=4):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(1, 2**bits, n, generator=g) * (torch.rand(n, generator=g) < 0.2)
    codebook = torch.cat([torch.zeros(1), torch.linspace(-1, 1, 2**bits - 1)])
    return idx, codebook


@pytest.mark.parametrize("huffman", [True, False])
def test_pack_unpack_exact(huffman):
    idx, cb = _layer()
    bias = torch.randn(40)
    data, stats = pack_layer(idx, cb, 4, 3, bias=bias, use_huffman=huffman, float16=False)
    w, b, back = unpack_layer(data, idx.numel(), 40)
    assert torch.equal(w.view(40, 30), cb[idx])
    assert torch.equal(b, bias)
    assert back.total_bytes == len(data) == stats.total_bytes
    assert stats.nonzero == int((idx != 0).sum())
    if not huffman:
        assert stats.value_bits_fixed == stats.entries * 4
    assert stats.value_bits_huffman <= stats.value_bits_fixed


def test_huffman_packing_is_smaller_than_fixed_width():
    idx, cb = _layer(bits=5)
    # Skew the indices (trained weights cluster near zero), so Huffman has something to win.
    idx = torch.where(idx > 20, idx // 4 + 1, idx)
    fixed, _ = pack_layer(idx, torch.cat([torch.zeros(1), torch.linspace(-1, 1, 31)]), 5, 4, use_huffman=False)
    coded, s = pack_layer(idx, torch.cat([torch.zeros(1), torch.linspace(-1, 1, 31)]), 5, 4, use_huffman=True)
    assert len(coded) < len(fixed)
    assert s.value_bits_huffman / s.entries < 5


def test_truncated_layer_bytes_are_an_error():
    idx, cb = _layer()
    data, _ = pack_layer(idx, cb, 4, 3)
    with pytest.raises(CheckpointError):
        unpack_layer(data[:-5], idx.numel(), 0)
    with pytest.raises(CheckpointError, match="trailing"):
        unpack_layer(data + b"\0", idx.numel(), 0)


def test_dense_layer_stores_no_gap_stream():
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(1, 8, (50, 20), generator=g)
    cb = torch.cat([torch.zeros(1), torch.linspace(-1, 1, 7)])
    data, stats = pack_layer(idx, cb, 3, 4, float16=False)
    assert stats.gap_bits_huffman == 0 and stats.entries == 1000
    # 7 equiprobable symbols: about log2(7) = 2.81 bits each, and nothing for positions.
    assert 2.7 < stats.value_bits_huffman / 1000 < 2.9
    w, _, back = unpack_layer(data, 1000, 0)
    assert torch.equal(w.view(50, 20), cb[idx]) and back.total_bytes == len(data)
