"""Image classification data sets as in-memory tensors, with fixed train/val/test splits.

``fashion-mnist``: 55,000 train / 5,000 validation (carved from the official training set with a
fixed seed) / 10,000 test. ``digits``: scikit-learn's 1,797 8x8 digits, upsampled to 28x28 so
every 28x28 model in the registry takes them; 1,297 / 200 / 300. The test split is for final
numbers only; model selection uses the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from torchslim.errors import ConfigError, DataError, suggest

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0
FMNIST_VAL = 5000
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


@dataclass(frozen=True)
class ImageData:
    """One split of a data set: float images ``[N, C, H, W]`` (normalized) and int64 labels."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def subset(self, n: int) -> ImageData:
        """The first ``n`` samples (fixed, so results are reproducible)."""
        return ImageData(self.name, self.split, self.images[:n], self.labels[:n], self.num_classes)


def _split_indices(n: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _fashion_mnist(split: str, data_dir: str | Path | None) -> ImageData:
    from torchslim.data import fashion_mnist

    arrays = fashion_mnist.load_arrays(data_dir)
    if split == "test":
        x, y = arrays["test_images"], arrays["test_labels"]
    else:
        tr, va = _split_indices(len(arrays["train_labels"]), FMNIST_VAL)
        idx = tr if split == "train" else va
        x, y = arrays["train_images"][idx], arrays["train_labels"][idx]
    images = (torch.from_numpy(x.astype(np.float32) / 255.0) - FMNIST_MEAN) / FMNIST_STD
    return ImageData("fashion-mnist", split, images.unsqueeze(1), torch.from_numpy(y.astype(np.int64)), 10)


def _digits(split: str, data_dir: str | Path | None) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    parts = {"test": perm[:300], "val": perm[300:500], "train": perm[500:]}
    idx = torch.from_numpy(np.sort(parts[split]))
    return ImageData("digits", split, x[idx].contiguous(), y[idx], 10)


_LOADERS = {"fashion-mnist": _fashion_mnist, "digits": _digits}
_CACHE: dict[tuple[str, str, str], ImageData] = {}


def dataset_names() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(name: str, split: str, *, data_dir: str | Path | None = None) -> ImageData:
    """Load one split of a data set (cached in memory per process).

    >>> d = load_dataset("digits", "test")
    >>> (len(d), d.input_shape)
    (300, (1, 28, 28))
    """
    if name not in _LOADERS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {dataset_names()}.{suggest(name, _LOADERS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    key = (name, split, str(data_dir))
    if key not in _CACHE:
        _CACHE[key] = _LOADERS[name](split, data_dir)
    return _CACHE[key]


def make_loader(
    data: ImageData,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    world_size: int = 1,
    rank: int = 0,
) -> DataLoader:
    """A DataLoader over in-memory tensors.

    Shuffled loaders always use a DistributedSampler (``world_size=1`` for one process): its
    permutation depends only on ``seed + epoch``, and rank ``r`` takes positions ``r::world``, so
    the union of the ranks' batches at step ``i`` is exactly the single-process batch ``i`` of
    size ``batch_size * world_size``. That makes a DDP run and a one-process run with the same
    global batch see the same samples at every step.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if len(data) == 0:
        raise DataError(f"{data.name}/{data.split} is empty")
    ds = TensorDataset(data.images, data.labels)
    if not shuffle and world_size == 1:
        return DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=drop_last)
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last)


def augment(
    x: torch.Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True, *, world_size: int = 1, rank: int = 0
) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels and random horizontal flip, per sample.

    Random draws are made for the whole global batch (``len(x) * world_size``) and rank ``r``
    takes positions ``r::world_size`` (matching :func:`make_loader`), so augmentation under DDP
    equals the one-process run's.

    Done on the whole batch with one gather instead of per-image transforms: on 2 CPU cores a
    torchvision transform per 28x28 image costs more than the LeNet forward pass.
    """
    n, _, h, w = x.shape
    sel = torch.arange(rank, n * world_size, world_size)
    padded = F.pad(x, (pad, pad, pad, pad), value=float(x.min()))
    dy = torch.randint(0, 2 * pad + 1, (n * world_size,), generator=generator)[sel]
    dx = torch.randint(0, 2 * pad + 1, (n * world_size,), generator=generator)[sel]
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    if flip:
        mask = torch.rand(n * world_size, generator=generator)[sel] < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out
