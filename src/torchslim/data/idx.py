"""Reader for the IDX format (MNIST, Fashion-MNIST), gzip-compressed or raw.

Hand-written because the format is 20 lines and torchvision's reader insists on its own folder
layout and download logic; this one reads exactly the file it is given and fails with a
:class:`DataError` that names the file when the file is truncated or not IDX.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from torchslim.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an uncompressed IDX payload into a numpy array.

    >>> read_idx_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).tolist()
    [7, 9]
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{source} is not an IDX file (bad magic number); re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source} is truncated inside its header; re-download it")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{source} holds {len(raw) - header} data bytes but its header promises {expected} "
            f"(shape {shape}); the file is truncated or corrupt, re-download it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# The largest payload an IDX file of these data sets holds (60,000 28x28 images: 47,040,016 B),
# with room to spare; a gzip member that inflates past it is refused while inflating (a 1 MB
# gzip bomb would otherwise take gigabytes before any check).
MAX_IDX_BYTES = 256 * 2**20


def gunzip_capped(raw: bytes, source: str, limit: int = MAX_IDX_BYTES) -> bytes:
    """Inflate gzip ``raw``, refusing output past ``limit`` bytes without producing it."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise DataError(f"{source} inflates past {limit // 2**20} MiB, more than any IDX file here holds; it is "
                            "not a data file of this set (a gzip bomb?)")  # fmt: skip
        if not d.eof:
            raise DataError(f"{source} is a truncated gzip file; re-download it")
    except zlib.error as exc:
        raise DataError(f"{source} is a damaged gzip file ({exc}); re-download it") from exc
    return out


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array, with errors that name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    if data[:2] == b"\x1f\x8b":
        data = gunzip_capped(data, str(path))
    return read_idx_bytes(data, str(path))
