import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchslim.compression import huffman
from torchslim.errors import CheckpointError


def test_dyadic_distribution_gets_exact_entropy_lengths():
    freqs = [800, 400, 200, 100, 100]  # probabilities 1/2, 1/4, 1/8, 1/16, 1/16
    lengths = huffman.code_lengths(freqs)
    assert lengths == [1, 2, 3, 4, 4]
    p = np.array(freqs) / sum(freqs)
    entropy = float(-(p * np.log2(p)).sum())
    avg = sum(f * n for f, n in zip(freqs, lengths, strict=True)) / sum(freqs)
    assert avg == pytest.approx(entropy)  # 1.875 bits


def test_unused_symbols_get_no_code_and_lone_symbol_gets_one_bit():
    assert huffman.code_lengths([0, 7, 0]) == [0, 1, 0]
    assert huffman.code_lengths([0, 0]) == [0, 0]
    data, nbits = huffman.encode([1, 1, 1], [0, 1, 0])
    assert nbits == 3 and huffman.decode(data, 3, [0, 1, 0]) == [1, 1, 1]


def test_canonical_codes_are_prefix_free():
    lengths = [2, 2, 3, 3, 3, 3]
    codes = huffman.canonical_codes(lengths)
    words = [format(c, f"0{n}b") for c, n in zip(codes, lengths, strict=True)]
    assert words == ["00", "01", "100", "101", "110", "111"]
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)


def test_length_limit_on_a_fibonacci_distribution():
    fib = [1, 1]
    while len(fib) < 25:
        fib.append(fib[-1] + fib[-2])
    unlimited = huffman._huffman_lengths(dict(enumerate(fib)))
    assert max(unlimited.values()) == 24
    lengths = huffman.code_lengths(fib)
    assert max(lengths) <= huffman.MAX_LENGTH
    assert sum(2.0**-n for n in lengths) <= 1.0
    syms = np.repeat(np.arange(25), np.minimum(fib, 50))
    data, nbits = huffman.encode(syms, lengths)
    assert huffman.decode(data, len(syms), lengths) == syms.tolist()


def test_fixed_width_code_is_plain_binary():
    data, nbits = huffman.encode([0, 5, 7, 2], huffman.fixed_lengths(8, 3))
    assert nbits == 12
    assert format(int.from_bytes(data, "big") >> 4, "012b") == "000101111010"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=3000), st.integers(41, 300))
def test_round_trip_is_exact(symbols, alphabet):
    freqs = np.bincount(symbols, minlength=alphabet).tolist()
    lengths = huffman.code_lengths(freqs)
    data, nbits = huffman.encode(symbols, lengths)
    assert len(data) == (nbits + 7) // 8
    assert nbits == huffman.encoded_bits(symbols, lengths)
    assert huffman.decode(data, len(symbols), lengths) == symbols


def test_truncated_stream_is_a_checkpoint_error():
    lengths = huffman.code_lengths([5, 3, 1, 1])
    data, _ = huffman.encode([0, 1, 2, 3] * 50, lengths)
    with pytest.raises(CheckpointError, match="truncated"):
        huffman.decode(data[:10], 200, lengths)


def test_symbol_without_code_is_refused():
    with pytest.raises(ValueError, match="no code"):
        huffman.encode([2], [1, 1, 0])
