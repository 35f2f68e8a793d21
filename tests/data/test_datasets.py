import pytest
import torch

from torchslim.data import augment, load_dataset, make_loader
from torchslim.errors import ConfigError


def test_fashion_mnist_splits_are_fixed_and_disjoint():
    tr, va, te = (load_dataset("fashion-mnist", s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (55000, 5000, 10000)
    assert tr.input_shape == (1, 28, 28) and tr.num_classes == 10
    # normalized: mean ~0, std ~1 over the training split
    assert abs(float(tr.images.mean())) < 0.01 and abs(float(tr.images.std()) - 1) < 0.01
    # val is carved from train: no image appears in both (compare by hash of the pixels)
    h_tr = {hash(x.numpy().tobytes()) for x in tr.images[:5000]}
    h_va = {hash(x.numpy().tobytes()) for x in va.images}
    assert len(h_tr & h_va) < 5  # Fashion-MNIST has a handful of duplicate images


def test_digits_always_available():
    d = load_dataset("digits", "train")
    assert len(d) == 1297 and d.input_shape == (1, 28, 28)
    assert sorted(d.labels.unique().tolist()) == list(range(10))


def test_unknown_dataset_suggests():
    with pytest.raises(ConfigError, match="fashion-mnist"):
        load_dataset("fashion_mnist", "train")


def test_loader_shards_equal_the_single_process_batches():
    d = load_dataset("digits", "train")
    single = next(iter(make_loader(d, 64, shuffle=True, seed=3, epoch=1, drop_last=True)))[1]
    r0 = next(iter(make_loader(d, 32, shuffle=True, seed=3, epoch=1, drop_last=True, world_size=2, rank=0)))[1]
    r1 = next(iter(make_loader(d, 32, shuffle=True, seed=3, epoch=1, drop_last=True, world_size=2, rank=1)))[1]
    assert torch.equal(single[0::2], r0) and torch.equal(single[1::2], r1)


def test_augment_shifts_at_most_pad_and_matches_across_ranks():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = augment(x, torch.Generator().manual_seed(0), pad=2, flip=False)
    ys, xs = torch.nonzero(out[:, 0] == 1.0, as_tuple=True)[1:]
    assert len(ys) == 8 and int((ys - 14).abs().max()) <= 2 and int((xs - 14).abs().max()) <= 2
    full = augment(x, torch.Generator().manual_seed(5))
    half = augment(x[1::2], torch.Generator().manual_seed(5), world_size=2, rank=1)
    assert torch.equal(full[1::2], half)
