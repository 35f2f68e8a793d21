"""Latency with warm-up, fixed threads, many runs; two models compared interleaved.

Machines here are shared and noisy, so speed claims are ratios measured side by side:
:func:`compare_latency` alternates runs of the two models so drift hits both equally.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    batch_size: int

    @property
    def throughput(self) -> float:
        """Samples per second at the median."""
        return self.batch_size / (self.median_ms / 1000.0)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "throughput": self.throughput}


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _as_callable(fn: Any, example: Any) -> Callable[[], Any]:
    from torchslim.data.protocol import ModelInput

    inp = ModelInput.of(example)
    return lambda: inp(fn)


def _stats(times: list[float], batch: int) -> LatencyStats:
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return LatencyStats(statistics.median(times) * 1e3, q[0] * 1e3, q[-1] * 1e3, len(times), batch)


MAX_RUNS = 100_000  # timed runs (or warm-up runs) per batch size; more is a typo that would run for hours


def check_runs(runs: int, warmup: int = 0, *, what: str = "runs") -> None:
    """Refuse run counts outside 1..MAX_RUNS (warm-up: 0..MAX_RUNS) before any timing starts.

    >>> check_runs(0)
    Traceback (most recent call last):
    ...
    torchslim.errors.ConfigError: runs must be 1 to 100,000, got 0
    """
    from torchslim.errors import ConfigError

    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= MAX_RUNS:
        raise ConfigError(f"{what} must be 1 to {MAX_RUNS:,}, got {runs!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= MAX_RUNS:
        raise ConfigError(f"warm-up runs must be 0 to {MAX_RUNS:,}, got {warmup!r}")


def _batch_of(example: Any) -> int:
    from torchslim.data.protocol import ModelInput

    args = example if isinstance(example, tuple) else (example,)
    return ModelInput(args).batch_size


@torch.inference_mode()
def measure_latency(
    fn: Callable[..., Any], example: Any, *, warmup: int = 10, runs: int = 50, threads: int | None = 2
) -> LatencyStats:
    """Median and spread of ``fn(example)`` wall time (``fn`` is a model or any callable)."""
    check_runs(runs, warmup)
    call = _as_callable(fn, example)
    with num_threads(threads):
        for _ in range(warmup):
            call()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    return _stats(times, _batch_of(example))


@torch.inference_mode()
def compare_latency(
    fn_a: Callable[..., Any],
    fn_b: Callable[..., Any],
    example: Any,
    *,
    example_b: Any = None,
    warmup: int = 10,
    runs: int = 50,
    threads: int | None = 2,
) -> tuple[LatencyStats, LatencyStats, float]:
    """Time two models interleaved (a, b, a, b...). Returns ``(a, b, a_median / b_median)``.

    A ratio above 1 means ``b`` is faster.
    """
    check_runs(runs, warmup)
    ca = _as_callable(fn_a, example)
    cb = _as_callable(fn_b, example if example_b is None else example_b)
    ta: list[float] = []
    tb: list[float] = []
    with num_threads(threads):
        for _ in range(warmup):
            ca()
            cb()
        for _ in range(runs):
            for call, acc in ((ca, ta), (cb, tb)):
                t0 = time.perf_counter()
                call()
                acc.append(time.perf_counter() - t0)
    sa, sb = _stats(ta, _batch_of(example)), _stats(tb, _batch_of(example if example_b is None else example_b))
    return sa, sb, sa.median_ms / sb.median_ms


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives
    ``fork`` + ``exec``, so a child process started by a 2 GB parent would report the parent's peak.
    Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def reuse_freed_memory(*, mmap_threshold: int = 32 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Make glibc keep freed activation buffers for reuse (process-wide); ``False`` where it cannot.

    PyTorch's CPU allocator hands each large tensor to ``malloc``, and glibc serves blocks above
    its mmap threshold with fresh ``mmap`` pages and unmaps them on ``free``. A forward pass that
    allocates tens of MB of activations can then page-fault (and zero-fill) them again on every
    call, which ONNX Runtime's arena allocator never does. Raising the mmap threshold (at most 32 MiB on 64-bit
    glibc) and the trim threshold keeps the freed blocks in the heap, as jemalloc or tcmalloc
    (the usual advice for PyTorch CPU inference) would. It affects every later allocation of
    the process, PyTorch's and other libraries' alike, so benchmarks call it once for all
    methods.

    >>> isinstance(reuse_freed_memory(), bool)
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(mallopt(m_trim_threshold, int(trim_threshold)))
