import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from torchslim.data import fashion_mnist
from torchslim.data.idx import read_idx, read_idx_bytes
from torchslim.errors import DataError, DataNotFoundError

REAL = fashion_mnist.DEBIAN_DIR


def test_reads_real_test_files():
    images = read_idx(REAL / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(REAL / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10  # the test set is balanced


def test_real_files_pass_md5():
    for name in fashion_mnist.FILES.values():
        fashion_mnist.verify(REAL / name)


def test_truncated_file_is_a_data_error(tmp_path: Path):
    raw = gzip.decompress((REAL / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(bad)


def test_corrupt_gzip_is_a_data_error(tmp_path: Path):
    data = bytearray((REAL / "t10k-labels-idx1-ubyte.gz").read_bytes())
    data[200:260] = b"\x00" * 60
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError):
        read_idx(bad)


def test_bad_magic():
    with pytest.raises(DataError, match="bad magic"):
        read_idx_bytes(b"\x01\x02\x03\x04")


def test_md5_detects_a_flipped_byte(tmp_path: Path):
    for name in fashion_mnist.FILES.values():
        shutil.copy(REAL / name, tmp_path / name)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(target.read_bytes()))
    payload[5000] = (payload[5000] + 1) % 10  # still a valid IDX file, but not the real data
    target.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DataError, match="MD5"):
        fashion_mnist.load_arrays(tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_arrays(tmp_path)


def test_gzip_bomb_is_refused_while_inflating(tmp_path: Path):
    from torchslim.data.idx import gunzip_capped

    payload = bytes(20_000)
    raw = gzip.compress(payload)
    assert gunzip_capped(raw, "ok.gz", limit=20_000) == payload
    with pytest.raises(DataError, match=r"bomb.gz inflates past .* gzip bomb"):
        gunzip_capped(raw, "bomb.gz", limit=19_999)
    with pytest.raises(DataError, match="truncated gzip"):
        gunzip_capped(raw[: len(raw) // 2], "cut.gz")
    # Through the Fashion-MNIST check: a file whose MD5 fails is inflated with the cap too.
    big = tmp_path / "t10k-labels-idx1-ubyte.gz"
    big.write_bytes(gzip.compress(bytes(300 * 2**20), compresslevel=1))
    from torchslim.data.fashion_mnist import verify

    with pytest.raises(DataError, match="inflates past 256 MiB"):
        verify(big)
