"""Where models and data come from: the one model protocol and the data sources the CLI names.

A model is any ``nn.Module``, a registered name (``torchslim models``), a torchslim checkpoint
(``.safetensors``), a local Hugging Face folder (``config.json`` + weights), or
``pkg.module:factory`` / ``path/to/file.py:factory`` (a callable that returns the model, as
uvicorn takes ``app:create``); ``pkg.module:factory@ckpt.safetensors`` loads a checkpoint of such a
model into the model the factory builds (checkpoints never name code to import).

Data is a built-in data set name (``fashion-mnist``, ``digits``), a folder of images in class
sub-folders (``torchvision.datasets.ImageFolder``; with ``train/``, ``val/``, ``test/`` inside,
those are the splits, else the images are split 80/10/10 with a fixed seed), a UTF-8 text file
with one sentence per line (for encoders; the first 40% calibrates and trains, the rest of the
first half validates, the second half evaluates), or ``pkg.module:factory`` returning a DataLoader (every split) or a dict of them by
split name. In Python, a dict ``{"train": ..., "val": ..., "test": ...}`` of loaders gives each split.

>>> resolve_model("lenet5")[0].__class__.__name__
'LeNet5'
>>> resolve_model("torch.nn:Identity")[0]
Identity()
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import CheckpointError, ConfigError, DataError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _is_factory_spec(spec: str) -> bool:
    mod, sep, attr = spec.rpartition(":")
    return bool(sep and mod and attr.isidentifier() and not (len(mod) == 1 and mod.isalpha()))


def import_factory(spec: str, what: str) -> Any:
    """``pkg.module:name`` or ``file.py:name``, imported (not called)."""
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise ConfigError(f"--{what} {spec}: {path} does not exist")
            mspec = importlib.util.spec_from_file_location(f"_torchslim_user_{path.stem}", path)
            assert mspec is not None and mspec.loader is not None
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mspec.name] = module
            mspec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # as `python -m` does: the current folder's modules import
            module = importlib.import_module(mod_name)
    except ConfigError:
        raise
    except Exception as exc:  # the user's module may raise anything while importing
        raise ConfigError(
            f"--{what} {spec}: cannot import {mod_name} ({type(exc).__name__}: {exc}); "
            "give an importable module (on PYTHONPATH or in the current folder) or a path to a .py file"
        ) from exc
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")][:10]
        raise ConfigError(f"--{what} {spec}: {mod_name} has no attribute {attr!r} (it has {', '.join(names)})")
    return getattr(module, attr)


def _call(obj: Any, spec: str, what: str) -> Any:
    if isinstance(obj, nn.Module) or not callable(obj):  # an instance, not a factory
        return obj
    try:
        return obj()
    except Exception as exc:  # the user's factory may raise anything
        raise ConfigError(f"--{what} {spec}: calling it raised {type(exc).__name__}: {exc}") from exc


def resolve_model(spec: Any) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, meta)`` from any model source; ``meta["architecture"]`` names how to rebuild it."""
    if isinstance(spec, nn.Module):
        return spec, {}
    if not isinstance(spec, (str, Path)):
        raise ConfigError(f"a model is an nn.Module, a name, a checkpoint, a folder or pkg.module:factory, not {type(spec).__name__}")
    text = str(spec)
    path = Path(text)
    base, at, weights = text.rpartition("@")
    if at and base and weights.endswith(".safetensors"):
        # pkg.module:factory@ckpt.safetensors: a checkpoint of a model only the user's code can build.
        skeleton, meta = resolve_model(base)
        from torchslim.checkpoint import load_checkpoint

        model, ck = load_checkpoint(weights, model=skeleton)
        return model, {**ck, **meta}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} is a folder without config.json; point at a Hugging Face model folder or a checkpoint file")
        from torchslim.models.transformers import load_hf_encoder

        # No "architecture": a checkpoint of it reloads into the folder's model (FOLDER@ckpt.safetensors).
        return load_hf_encoder(path), {"hf_folder": str(path.resolve())}
    if text.endswith(".safetensors") or path.is_file():
        if path.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"):
            raise CheckpointError(
                f"{path} is a pickle file, which torchslim does not load (it can run code); save the model with "
                "torchslim.save_checkpoint(model, 'm.safetensors') or give pkg.module:factory"
            )
        from torchslim.checkpoint import load_checkpoint

        return load_checkpoint(path)
    if _is_factory_spec(text):
        model = _call(import_factory(text, "model"), text, "model")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"--model {text} returned {type(model).__name__}, not a torch.nn.Module")
        # No "architecture": a checkpoint never names code to import (that would run code on load);
        # it reloads with load_checkpoint(path, model=factory()).
        return model, {"factory": text}
    from torchslim.models import create_model

    return create_model(text), {"architecture": {"name": text, "config": {}}}


# ----------------------------------------------------------------------------- data
def _image_folder(root: Path, split: str, seed: int = 0) -> Any:
    from torchvision import datasets, transforms

    has_splits = [s for s in SPLITS if (root / s).is_dir()]
    folder = root / split if has_splits else root
    if has_splits and split not in has_splits:
        raise DataError(f"{root} has the split folders {has_splits} but no {split}/; add it or use another split")
    first = next((p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES), None)
    if first is None:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders; put each "
                        f"class's images in a sub-folder named after it ({folder / 'CLASS' / 'image.png'})")
    from PIL import Image

    try:
        with Image.open(first) as im:
            gray = im.mode in ("L", "1", "I;16", "I")
            size = (im.height, im.width)
    except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"{first} is not a readable image ({exc}); remove or replace it") from exc

    def load(p: str) -> Any:
        """torchvision's loader, with an unreadable image named as a DataError instead of PIL's error."""
        try:
            with open(p, "rb") as f, Image.open(f) as im:
                return im.convert("RGB")
        except OSError as exc:
            raise DataError(f"{p} is not a readable image ({exc}); remove or replace it") from exc

    tf = transforms.Compose([
        transforms.Grayscale(1) if gray else transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.Resize(size),
        transforms.ToTensor(),
    ])  # fmt: skip
    try:
        ds = datasets.ImageFolder(str(folder), transform=tf, loader=load)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{folder}: {exc}; put images in one sub-folder per class") from exc
    if has_splits:
        return ds
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = n_test = max(1, len(ds) // 10)
    parts = {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}
    if not parts[split]:
        raise DataError(f"{folder} has {len(ds)} images, too few to split 80/10/10; add images or split folders")
    return torch.utils.data.Subset(ds, sorted(parts[split]))


def read_sentences(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8, one sentence per line") from exc
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path} holds no sentences; put one sentence per line")
    return lines


def _sentences(path: Path, split: str, tokenizer: Any, batch_size: int) -> Any:
    lines = read_sentences(path)
    if tokenizer is None:
        raise ConfigError(f"{path} is a sentences file: it needs a tokenizer, so give a Hugging Face folder as the model")
    n = len(lines)
    half = max(1, n // 2) if n > 1 else 1
    cut = max(1, (n * 2) // 5)  # train: the first 40%; val: the rest of the first half; test: the second half
    parts = {"train": lines[:cut] if cut < half else lines[:half], "val": lines[cut:half], "test": lines[half:] or lines}
    part = parts[split] or parts["test"]  # a file too short to hold a validation part validates on the test part
    from torchslim.transformers.embed import calibration_batches

    # Plain dicts of the model's keyword arguments: the data protocol's batch form for encoders.
    return [b.as_kwargs() for b in calibration_batches(tokenizer, part, batch_size=batch_size)]


def resolve_data(spec: Any, split: str, *, tokenizer: Any = None, batch_size: int = 64, data_dir: str | None = None) -> Any:
    """One split of a data source (see the module docstring): an ``ImageData``, a DataLoader or batches."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if isinstance(spec, Mapping) and spec and all(k in SPLITS for k in spec):  # {"train": ..., "val": ..., "test": ...}
        if split not in spec:
            raise ConfigError(f"the data has the splits {sorted(spec)} but no {split!r}; add it")
        return spec[split]
    if not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    path = Path(text)
    from torchslim.data.datasets import dataset_names, load_dataset

    if text in dataset_names():
        return load_dataset(text, split, data_dir=data_dir)
    if path.is_dir():
        ds = _image_folder(path, split)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=split == "train",
                                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    if path.is_file():
        return _sentences(path, split, tokenizer, batch_size)
    if _is_factory_spec(text):
        out = _call(import_factory(text, "data"), text, "data")
        if isinstance(out, Mapping):
            key = split if split in out else "calib" if split == "train" and "calib" in out else None
            if key is None:
                raise ConfigError(f"--data {text} returned the splits {sorted(out)}; it has no {split!r}")
            return out[key]
        return out
    raise ConfigError(
        f"--data {text!r} is not a built-in data set ({', '.join(dataset_names())}), an image folder, a sentences "
        "file or pkg.module:factory"
    )
