"""Issue 19: run counts are bounded before any timing (``latency_runs: 1000000000000`` hung)."""

import pytest
import torch
import torch.nn as nn

from torchslim.errors import ConfigError
from torchslim.measure import evaluate
from torchslim.measure.latency import check_runs, measure_latency


@pytest.mark.parametrize("runs", [0, -5, 100_001, 10**12, True, 2.5])
def test_check_runs_refuses(runs):
    with pytest.raises(ConfigError, match="runs must be 1 to 100,000"):
        check_runs(runs)


def test_measure_latency_and_evaluate_refuse_before_work():
    calls = []
    with pytest.raises(ConfigError, match="warm-up runs must be 0 to 100,000, got -1"):
        measure_latency(lambda x: calls.append(x), torch.zeros(1), runs=1, warmup=-1)
    assert calls == []
    # Refused before the data set is even looked up (no such data set exists).
    with pytest.raises(ConfigError, match="latency_runs must be 1 to 100,000, got 1000000000000"):
        evaluate(nn.Linear(2, 2), dataset="no-such-data", latency_runs=10**12)
