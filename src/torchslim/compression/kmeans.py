"""One-dimensional k-means for weight sharing, with Deep Compression's linear initialisation.

Written here (not scikit-learn's ``KMeans``) because in one dimension Lloyd's algorithm is exact
and cheap with a sorted codebook: the nearest centroid of every weight is found by bisection
over the midpoints (``torch.bucketize``), so a 400k-weight layer takes milliseconds; and the
paper's *linear* initialisation (centroids evenly spaced over [min, max] of the weights) is
the one that keeps the rare large weights represented, which the density-based inits lose.

>>> import torch
>>> w = torch.tensor([-1.0, -0.9, 0.1, 0.2, 1.0, 1.1])
>>> c, idx = kmeans_1d(w, 3)
>>> [round(v, 2) for v in c.tolist()], idx.tolist()
([-0.95, 0.15, 1.05], [0, 0, 1, 1, 2, 2])
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Init = Literal["linear", "density", "random"]


def init_centroids(values: torch.Tensor, k: int, init: Init = "linear", seed: int = 0) -> torch.Tensor:
    """Initial codebook of ``k`` centroids for 1-D ``values`` (sorted ascending).

    ``linear``: evenly spaced over [min, max] (Han et al.'s choice); ``density``: evenly spaced
    quantiles of the values; ``random``: ``k`` values drawn without replacement.
    """
    v = values.detach().flatten().double()
    if init == "linear":
        c = torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    elif init == "density":
        c = torch.quantile(v, torch.linspace(0, 1, k, dtype=torch.float64))
    elif init == "random":
        g = torch.Generator().manual_seed(seed)
        c = v[torch.randperm(v.numel(), generator=g)[:k]]
    else:
        raise ValueError(f"unknown init {init!r}")
    return torch.sort(c).values


def assign(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of each value (``centroids`` sorted ascending)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(values.to(mids.dtype), mids)


def kmeans_1d(
    values: torch.Tensor, k: int, *, init: Init = "linear", iters: int = 50, tol: float = 1e-7, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster 1-D ``values`` into at most ``k`` centroids; returns (centroids, index per value).

    Centroids come back sorted ascending (float32); a cluster that empties keeps its previous
    centroid. With ``k >= len(unique(values))`` the codebook is the unique values (zero error).
    """
    v = values.detach().flatten().double()
    if v.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    vs = torch.sort(v).values
    distinct = torch.cat([vs[:1], vs[1:][vs[1:] != vs[:-1]]])
    if distinct.numel() <= k:
        return distinct.float(), assign(v, distinct)
    c = init_centroids(vs, k, init, seed).numpy()
    # Lloyd's iterations on the sorted values: each cluster is a contiguous run between two
    # midpoints, so its sum and count come from prefix sums in O(k log n) per iteration.
    # (numpy here: torch.searchsorted is ~1000x slower for this shape on CPU.)
    a = vs.numpy()
    prefix = np.concatenate([[0.0], np.cumsum(a)])
    scale = tol * float(max(abs(a[0]), abs(a[-1]), 1e-12))
    for _ in range(iters):
        bounds = np.searchsorted(a, (c[1:] + c[:-1]) / 2, side="right")
        edges = np.concatenate([[0], bounds, [a.size]])
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        new = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c))
        shift = float(np.abs(new - c).max())
        c = new
        if shift <= scale:
            break
    ct = torch.from_numpy(c)
    return ct.float(), assign(v, ct)
