"""Metrics over any data: built-ins, callables, stateful metrics, reference comparisons."""

import pytest
import torch
import torch.nn as nn

from torchslim.errors import ConfigError, DataError
from torchslim.measure import evaluate
from torchslim.measure.metrics import compute_metric

X = torch.eye(8)
Y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])  # the identity "model" is right on 7 of 8


def test_accuracy_and_callable_metric_weight_by_samples():
    data = [(X[:6], Y[:6]), (X[6:], Y[6:])]
    assert compute_metric(nn.Identity(), data, "accuracy")["accuracy"] == pytest.approx(87.5)
    r = compute_metric(nn.Identity(), data, lambda out, y: (out.argmax(1) == y).float().mean())
    assert r["value"] == pytest.approx(7 / 8) and r["samples"] == 8


class Counter:
    """A torchmetrics-style metric: update() then compute()."""

    def __init__(self) -> None:
        self.n = 0

    def reset(self) -> None:
        self.n = 0

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        self.n += len(y)

    def compute(self) -> torch.Tensor:
        return torch.tensor(float(self.n))


def test_stateful_metric_is_reset_updated_and_computed():
    m = Counter()
    assert compute_metric(nn.Identity(), [(X, Y)], m)["value"] == 8.0
    assert compute_metric(nn.Identity(), [(X, Y)], m)["value"] == 8.0


def test_reference_metrics():
    torch.manual_seed(0)
    ref = nn.Linear(8, 4)
    noisy = nn.Linear(8, 4)
    noisy.load_state_dict(ref.state_dict())
    with torch.no_grad():
        noisy.weight.add_(0.01 * torch.randn_like(noisy.weight))
    data = [torch.randn(32, 8)]
    err = compute_metric(noisy, data, "output_error", reference=ref)["value"]
    assert 0.0 < err < 0.1
    fid = compute_metric(ref, data, "fidelity", reference=ref)
    assert fid["mean_cos"] == pytest.approx(1.0) and fid["nn_agreement"] == 1.0


def test_metric_errors():
    with pytest.raises(ConfigError, match="unknown metric 'top5'"):
        compute_metric(nn.Identity(), [(X, Y)], "top5")
    with pytest.raises(ConfigError, match="pass reference="):
        compute_metric(nn.Identity(), [(X, Y)], "fidelity")
    with pytest.raises(DataError, match=r"returned a tensor of shape \(8,\)"):
        compute_metric(nn.Identity(), [(X, Y)], lambda out, y: out.argmax(1) == y)
    with pytest.raises(DataError, match="needs targets"):
        compute_metric(nn.Identity(), [X], "accuracy")


def test_evaluate_a_dict_model_on_batches_restores_its_mode():
    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, batch: dict) -> torch.Tensor:
            return self.fc(batch["x"])

    m = DictNet().train()
    data = [{"x": X, "labels": Y}, {"x": X[:3], "labels": Y[:3]}]
    r = evaluate(m, data, latency_runs=2)
    assert r["samples"] == 11 and r["params"] == 72 and r["macs"] == 64
    assert set(k for k in r if k.startswith("latency_ms_b")) == {"latency_ms_b1", "latency_ms_b8"}
    assert m.training is True
