"""Fashion-MNIST from the standard gzip IDX files, verified by MD5.

Looked for, in order: the ``data_dir`` argument, ``$TORCHSLIM_DATA_DIR/fashion-mnist``, and the
folder where Debian's ``dataset-fashion-mnist`` package installs it. :func:`download` is the
real online path (Zalando's published URLs); tests and benchmarks never call it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from torchslim.data.idx import gunzip_capped, read_idx
from torchslim.errors import DataError, DataNotFoundError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# MD5 of the .gz files as published in the data set's README.
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# Debian re-gzipped the files (new gzip headers, same IDX bytes), so their .gz MD5s differ from
# the published ones. For those we check the MD5 of the decompressed IDX payload instead,
# measured on the files of dataset-fashion-mnist 0.0~git20200523.55506a9-1.
PAYLOAD_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

HOW_TO_GET = (
    "install the Debian package (sudo apt-get install dataset-fashion-mnist), "
    "or pass --data-dir pointing at a folder with the four *-ubyte.gz files, "
    "or run `torchslim download fashion-mnist --data-dir DIR` on a machine with internet"
)


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = []
    if env := os.environ.get("TORCHSLIM_DATA_DIR"):
        dirs.append(Path(env) / "fashion-mnist")
    dirs.append(DEBIAN_DIR)
    return dirs


def find_dir(data_dir: str | Path | None = None) -> Path:
    """Return the first folder that holds all four files, or raise with how to get them."""
    looked = candidate_dirs(data_dir)
    for d in looked:
        if all((d / f).is_file() for f in FILES.values()):
            return d
    places = ", ".join(str(d) for d in looked)
    raise DataNotFoundError(f"Fashion-MNIST not found in {places}; {HOW_TO_GET}")


def verify(path: Path) -> None:
    """Check a file against its published MD5, or the Debian payload MD5 when re-gzipped."""
    raw = path.read_bytes()
    if hashlib.md5(raw).hexdigest() == PUBLISHED_MD5[path.name]:
        return
    try:
        payload = gunzip_capped(raw, str(path))
    except DataError as exc:
        raise DataError(f"{exc}; {HOW_TO_GET}") from exc
    if hashlib.md5(payload).hexdigest() != PAYLOAD_MD5[path.name]:
        raise DataError(
            f"{path} fails its MD5 check (neither the published .gz sum nor the known IDX payload "
            f"sum); the file is corrupt or not Fashion-MNIST. {HOW_TO_GET}"
        )


def load_arrays(
    data_dir: str | Path | None = None, *, check_md5: bool = True
) -> dict[str, np.ndarray]:
    """Return ``{"train_images", "train_labels", "test_images", "test_labels"}`` as uint8 arrays."""
    d = find_dir(data_dir)
    out: dict[str, np.ndarray] = {}
    for key, name in FILES.items():
        path = d / name
        if check_md5:
            verify(path)
        out[key] = read_idx(path)
    for split in ("train", "test"):
        n_img, n_lab = len(out[f"{split}_images"]), len(out[f"{split}_labels"])
        if n_img != n_lab or out[f"{split}_images"].shape[1:] != (28, 28):
            raise DataError(f"Fashion-MNIST {split} files in {d} disagree ({n_img} images, {n_lab} labels)")
    return out


def download(data_dir: str | Path) -> Path:
    """Download the four files from Zalando's published URLs into ``data_dir`` (needs internet).

    Each file is written under a temporary name, verified, then renamed, so an interrupted
    download leaves nothing that looks complete.
    """
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        target = d / name
        if target.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{name}.")
        os.close(fd)
        try:
            try:
                urllib.request.urlretrieve(URL + name, tmp)  # noqa: S310 - fixed https/http URL
            except OSError as exc:
                raise DataNotFoundError(f"cannot download {URL + name}: {exc}; {HOW_TO_GET}") from exc
            if hashlib.md5(Path(tmp).read_bytes()).hexdigest() != PUBLISHED_MD5[name]:
                raise DataError(f"downloaded {name} fails its published MD5; try again")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return d
