import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchslim.quantization.observers import OBSERVERS, ActivationStats, fake_quantize, qparams


def _stats(*batches: torch.Tensor, hist: bool = True) -> ActivationStats:
    s = ActivationStats()
    for b in batches:
        s.observe_minmax(b)
    if hist:
        s.start_histogram()
        for b in batches:
            s.observe_histogram(b)
    return s


def test_minmax_and_moving_average_match_hand_computed_values():
    s = _stats(torch.tensor([0.0, 1.0]), torch.tensor([-2.0, 3.0]), hist=False)
    assert s.range("minmax") == (-2.0, 3.0)
    lo, hi = s.range("moving_average")  # first batch, then 1% of the way to the second
    assert lo == pytest.approx(0.0 + 0.01 * (-2.0 - 0.0))
    assert hi == pytest.approx(1.0 + 0.01 * (3.0 - 1.0))


def test_percentile_of_a_uniform_ramp():
    x = torch.arange(10000, dtype=torch.float32)
    lo, hi = _stats(x).range("percentile", percentile=99.0)
    assert lo == 0.0  # non-negative data keeps its minimum
    assert hi == pytest.approx(9900, abs=2 * 9999 / 2048)


@pytest.mark.parametrize("observer", ["mse", "kl", "percentile"])
def test_histogram_observers_clip_a_heavy_tail(observer):
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((200_000,))
    s = _stats(x)
    lo, hi = s.range(observer, bits=4)
    mx = float(x.abs().max())  # about 11 for 200k Laplace(1) samples
    assert 2.0 < hi < 0.8 * mx and -0.8 * mx < lo < -2.0


def test_mse_finds_the_analytical_optimum_for_laplace():
    # Banner et al. (2019): the MSE-optimal 4-bit clipping of Laplace(0, b) is 5.03 b.
    torch.manual_seed(0)
    s = _stats(torch.distributions.Laplace(0.0, 1.0).sample((200_000,)))
    lo, hi = s.range("mse", bits=4)
    assert hi == pytest.approx(5.03, abs=0.3) and lo == pytest.approx(-5.03, abs=0.3)


def test_mse_range_has_lower_error_than_minmax_on_the_samples():
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((100_000,))
    s = _stats(x)
    errs = {}
    for obs in ("minmax", "mse"):
        scale, zp = qparams(*s.range(obs, bits=4), bits=4)
        errs[obs] = float(((fake_quantize(x, scale, zp, 4) - x) ** 2).mean())
    assert errs["mse"] < 0.5 * errs["minmax"]


def test_every_observer_returns_a_range_inside_the_data():
    x = torch.randn(5000) * 3 + 1
    s = _stats(x)
    for obs in OBSERVERS:
        lo, hi = s.range(obs)
        assert float(x.min()) - 1e-6 <= lo < hi <= float(x.max()) + 1e-3, obs


def test_qparams_seed_affine_formula():
    scale, zp = qparams(-1.0, 3.0, bits=8)
    assert scale == pytest.approx(4.0 / 255) and zp == round(1.0 / (4.0 / 255)) == 64
    scale, zp = qparams(-1.27, 0.5, symmetric=True)
    assert scale == pytest.approx(0.01) and zp == 128
    scale, zp = qparams(0.5, 2.0, bits=4)  # the range always contains 0 so zero is exact
    assert zp == 0 and scale == pytest.approx(2.0 / 15)


@settings(max_examples=60, deadline=None)
@given(lo=st.floats(-100, 0), width=st.floats(1e-3, 200), bits=st.integers(2, 8), symmetric=st.booleans())
def test_affine_round_trip_error_is_at_most_half_a_step(lo, width, bits, symmetric):
    hi = lo + width
    scale, zp = qparams(lo, hi, bits=bits, symmetric=symmetric)
    x = torch.linspace(min(lo, 0.0), max(hi, 0.0), 257, dtype=torch.float64)
    if symmetric:  # the negative side has one level fewer than 2^(b-1)
        amax = max(-min(lo, 0.0), max(hi, 0.0))
        x = x.clamp(-amax, amax)
    err = (fake_quantize(x, scale, zp, bits) - x).abs().max().item()
    assert err <= scale / 2 + 1e-9 * max(1.0, abs(lo) + abs(hi))


def test_seed_formula_and_integer_zero_point_differ_by_at_most_one_level():
    torch.manual_seed(0)
    w = torch.randn(1000, dtype=torch.float64) * 0.3 + 0.1
    lo, hi = float(w.min()), float(w.max())
    seed_q = torch.clamp(torch.round((w - lo) / (hi - lo) * 255), 0, 255)
    scale, zp = qparams(lo, hi, bits=8)
    ours = torch.clamp(torch.round(w / scale) + zp, 0, 255)
    assert (seed_q - ours).abs().max().item() <= 1
    assert math.isclose(scale, (hi - lo) / 255, rel_tol=1e-9)
