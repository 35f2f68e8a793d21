import pytest
import torch

from torchslim.compression.kmeans import assign, init_centroids, kmeans_1d


def test_linear_init_is_evenly_spaced_over_the_range():
    v = torch.tensor([-2.0, 0.3, 0.5, 6.0])
    c = init_centroids(v, 5, "linear")
    assert c.tolist() == pytest.approx([-2.0, 0.0, 2.0, 4.0, 6.0])


def test_codebook_size_and_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([-1.0, 0.0, 2.0])
    v = torch.cat([c + 0.01 * torch.randn(500, generator=g) for c in centers])
    c, idx = kmeans_1d(v, 3)
    assert c.numel() == 3
    assert c.tolist() == pytest.approx(centers.tolist(), abs=0.01)
    assert idx.min() == 0 and idx.max() == 2
    rmse = float((c[idx] - v).pow(2).mean().sqrt())
    assert rmse < 0.012


@pytest.mark.parametrize("k", [4, 16, 64])
def test_uniform_data_error_matches_the_quantization_bound(k):
    # k equal cells over [0, 1]: rmse = 1 / (k * sqrt(12)) for uniform data.
    v = torch.rand(200_000, generator=torch.Generator().manual_seed(1))
    c, idx = kmeans_1d(v, k)
    rmse = float((c[idx] - v).pow(2).mean().sqrt())
    assert c.numel() == k
    assert rmse == pytest.approx(1 / (k * 12**0.5), rel=0.1)


def test_error_falls_as_bits_rise():
    v = torch.randn(20_000, generator=torch.Generator().manual_seed(2))
    errs = []
    for bits in (2, 3, 4, 5, 6):
        c, idx = kmeans_1d(v, 2**bits)
        errs.append(float((c[idx] - v).pow(2).mean()))
    assert all(a > b for a, b in zip(errs[:-1], errs[1:], strict=True))
    assert errs[-1] < 0.002


def test_fewer_unique_values_than_clusters_is_lossless():
    v = torch.tensor([0.5, -0.25, 0.5, 1.0])
    c, idx = kmeans_1d(v, 8)
    assert torch.equal(c[idx], v)


def test_assign_picks_nearest_centroid():
    c = torch.tensor([0.0, 1.0, 10.0])
    assert assign(torch.tensor([0.4, 0.6, 5.4, 5.6, 100.0]), c).tolist() == [0, 1, 1, 2, 2]
