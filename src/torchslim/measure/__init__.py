"""Measurement: accuracy, embedding fidelity, size, sparsity, MACs, latency, memory, the speed guard."""

from torchslim.measure.accuracy import accuracy, embedding_fidelity, predict
from torchslim.measure.evaluate import evaluate
from torchslim.measure.latency import (
    LatencyStats,
    compare_latency,
    measure_latency,
    num_threads,
    peak_rss_mb,
    reuse_freed_memory,
)
from torchslim.measure.macs import count_macs
from torchslim.measure.size import count_params, file_size, saved_size, sparsity
from torchslim.measure.speed import SLOWER_BELOW, SpeedCheck, speed_check, speed_reasons

__all__ = [
    "SLOWER_BELOW", "LatencyStats", "SpeedCheck", "accuracy", "compare_latency", "count_macs", "count_params", "embedding_fidelity", "evaluate",
    "file_size", "measure_latency", "num_threads", "peak_rss_mb", "predict", "reuse_freed_memory", "saved_size", "sparsity",
    "speed_check", "speed_reasons",
]  # fmt: skip
