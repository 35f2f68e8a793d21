"""Calibration observers: each turns the activations seen on calibration data into a range.

All observers see the same two calibration passes: pass 1 records per-batch min/max (enough for
``minmax`` and ``moving_average``), pass 2 fills a 2048-bin histogram over pass 1's range, from
which ``percentile``, ``mse`` and ``kl`` choose clipping thresholds. A range becomes integer
parameters with :func:`qparams` (the seed's affine formula with an integer zero point).

>>> obs = ActivationStats()
>>> obs.observe_minmax(torch.tensor([-1.0, 0.5, 3.0]))
>>> obs.range("minmax")
(-1.0, 3.0)
>>> qparams(-1.0, 3.0, bits=8)
(0.01568627450980392, 64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "kl")
BINS = 2048


def qparams(lo: float, hi: float, *, bits: int = 8, symmetric: bool = False) -> tuple[float, int]:
    """``(scale, zero_point)`` of unsigned ``bits``-bit values covering ``[lo, hi]``.

    Asymmetric (the seed's formula): the range is widened to contain 0 (so zero is exact),
    ``scale = (max - min) / (2^b - 1)``, ``zero_point = round(-min / scale)``. Symmetric:
    ``scale = max(|min|, |max|) / (2^(b-1) - 1)`` and ``zero_point = 2^(b-1)``.

    >>> s, zp = qparams(0.0, 2.55)
    >>> round(s, 6), zp
    (0.01, 0)
    >>> qparams(-1.27, 0.5, symmetric=True)
    (0.01, 128)
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        amax = max(-lo, hi)
        scale = max(amax / (2 ** (bits - 1) - 1), 1e-12)
        return scale, 2 ** (bits - 1)
    levels = 2**bits - 1
    scale = max((hi - lo) / levels, 1e-12)
    zp = int(min(max(round(-lo / scale), 0), levels))
    return scale, zp


def fake_quantize(x: torch.Tensor, scale: float, zp: int, bits: int) -> torch.Tensor:
    """``(clamp(round(x / scale) + zp, 0, 2^b - 1) - zp) * scale`` (float in, float out)."""
    q = torch.clamp(torch.round(x / scale) + zp, 0, 2**bits - 1)
    return (q - zp) * scale


@dataclass
class ActivationStats:
    """What calibration saw at one activation: per-batch min/max, then a histogram."""

    mins: list[float] = field(default_factory=list)
    maxs: list[float] = field(default_factory=list)
    hist: torch.Tensor | None = None
    hist_lo: float = 0.0
    hist_hi: float = 0.0
    averaging: float = 0.01

    def observe_minmax(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.mins.append(float(x.min()))
        self.maxs.append(float(x.max()))

    def start_histogram(self) -> None:
        self.hist_lo, self.hist_hi = min(min(self.mins), 0.0), max(max(self.maxs), 0.0)
        if self.hist_hi - self.hist_lo < 1e-12:
            self.hist_hi = self.hist_lo + 1e-6
        self.hist = torch.zeros(BINS, dtype=torch.float64)

    def observe_histogram(self, x: torch.Tensor) -> None:
        assert self.hist is not None, "start_histogram() first"
        self.hist += torch.histc(x.detach().float(), BINS, self.hist_lo, self.hist_hi).double()

    @property
    def has_histogram(self) -> bool:
        return self.hist is not None and float(self.hist.sum()) > 0

    def range(self, observer: str, *, bits: int = 8, symmetric: bool = False, percentile: float = 99.99) -> tuple[float, float]:
        """The ``(lo, hi)`` the named observer picks."""
        if observer == "minmax":
            return min(self.mins), max(self.maxs)
        if observer == "moving_average":
            lo, hi = self.mins[0], self.maxs[0]
            for a, b in zip(self.mins[1:], self.maxs[1:], strict=True):
                lo += self.averaging * (a - lo)
                hi += self.averaging * (b - hi)
            return lo, hi
        if not self.has_histogram:
            return min(self.mins), max(self.maxs)
        if observer == "percentile":
            return self._percentile(percentile)
        if observer == "mse":
            return self._mse(bits, symmetric)
        if observer == "kl":
            return self._kl(bits)
        raise ValueError(observer)

    # -- histogram helpers
    def _centers(self) -> torch.Tensor:
        w = (self.hist_hi - self.hist_lo) / BINS
        return self.hist_lo + w * (torch.arange(BINS, dtype=torch.float64) + 0.5)

    def _percentile(self, p: float) -> tuple[float, float]:
        assert self.hist is not None
        cdf = torch.cumsum(self.hist, 0) / self.hist.sum()
        edges = torch.linspace(self.hist_lo, self.hist_hi, BINS + 1, dtype=torch.float64)
        lo_i = int(torch.searchsorted(cdf, torch.tensor((100.0 - p) / 100.0, dtype=torch.float64)))
        hi_i = int(torch.searchsorted(cdf, torch.tensor(p / 100.0, dtype=torch.float64)))
        lo = float(edges[lo_i]) if min(self.mins) < 0 else min(self.mins)
        return lo, float(edges[min(hi_i + 1, BINS)])

    def _mse(self, bits: int, symmetric: bool) -> tuple[float, float]:
        """Clipping range minimising the expected squared quantization error over the histogram."""
        assert self.hist is not None
        c, n = self._centers(), self.hist
        lo0, hi0 = self.hist_lo, self.hist_hi
        fracs = torch.linspace(0.05, 1.0, 96, dtype=torch.float64)
        best, best_err = (lo0, hi0), math.inf
        for f in fracs.tolist():
            lo, hi = lo0 * f, hi0 * f
            scale, zp = qparams(lo, hi, bits=bits, symmetric=symmetric)
            err = float((n * (fake_quantize(c, scale, zp, bits) - c) ** 2).sum())
            if err < best_err:
                best, best_err = (lo, hi), err
        return best

    def _kl(self, bits: int) -> tuple[float, float]:
        """TensorRT's entropy calibration, per side of zero: for the positive (and negative)
        part of the histogram, the clipping threshold whose quantized distribution is closest
        (KL divergence) to the clipped reference. The sides share the 2^b levels by width."""
        assert self.hist is not None
        width = (self.hist_hi - self.hist_lo) / BINS
        k0 = min(max(int(round(-self.hist_lo / width)), 0), BINS)  # first bin right of zero
        total_levels = 2**bits
        lo, hi = self.hist_lo, self.hist_hi
        if BINS - k0 > 0 and self.hist_hi > 0:
            lv = max(8, round(total_levels * (BINS - k0) / BINS))
            hi = self.hist_lo + width * (k0 + _kl_threshold(self.hist[k0:], lv))
        if k0 > 0 and self.hist_lo < 0:
            lv = max(8, round(total_levels * k0 / BINS))
            lo = self.hist_lo + width * (k0 - _kl_threshold(self.hist[:k0].flip(0), lv))
        return lo, hi


def _kl_threshold(hist: torch.Tensor, levels: int) -> int:
    """Bins of ``hist`` (ordered outward from zero) to keep: the minimum-KL clipping point."""
    n = hist.numel()
    if n > 1:
        # The spike of exact zeros after a ReLU would dominate the divergence and pull the
        # threshold far in; like NVIDIA's pytorch-quantization, count bin 0 as its neighbour.
        hist = hist.clone()
        hist[0] = hist[1]
    total = float(hist.sum())
    if n <= levels or total == 0:
        return n
    nz = torch.nonzero(hist).flatten()
    if float(hist[nz[-1]]) >= 1e-3 * total:
        # A point mass at the extreme (e.g. the background value of normalized images) is real
        # data, not a tail: clipping it shifts many values, whatever the KL divergence says.
        return n
    best_i, best_kl = n, math.inf
    for i in range(levels, n + 1, max(1, n // 64)):
        p = hist[:i].clone()
        p[-1] += hist[i:].sum()
        # Merge the i reference bins into `levels` bins, then spread each back evenly over its
        # non-empty source bins.
        seg = torch.bucketize(torch.arange(i), torch.linspace(0, i, levels + 1).long()[1:-1], right=True)
        src = hist[:i]
        sums = torch.zeros(levels, dtype=torch.float64).index_add_(0, seg, src)
        nonzero = torch.zeros(levels, dtype=torch.float64).index_add_(0, seg, (src > 0).double())
        q = torch.where(src > 0, (sums / nonzero.clamp(min=1))[seg], torch.zeros((), dtype=torch.float64))
        mask = p > 0
        if float(q[mask].min()) <= 0:
            continue
        pn, qn = p / p.sum(), q / q.sum()
        kl = float((pn[mask] * torch.log(pn[mask] / qn[mask])).sum())
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i
