import torch
import torch.nn as nn

from torchslim.measure import (
    compare_latency,
    count_macs,
    count_params,
    embedding_fidelity,
    evaluate,
    sparsity,
)
from torchslim.models import create_model
from torchslim.quantization import timed_runtime


def test_macs_of_known_models():
    x = torch.zeros(1, 1, 28, 28)
    assert count_macs(create_model("lenet300"), x) == 784 * 300 + 300 * 100 + 100 * 10
    # conv1 20x24x24x25 + conv2 50x8x8x500 + fc 800x500 + 500x10
    assert count_macs(create_model("lenet5"), x) == 288_000 + 1_600_000 + 400_000 + 5_000


def test_params_and_sparsity_count_zeros():
    m = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        m.weight[:, :3] = 0
    assert count_params(m) == {"params": 100, "nonzero_params": 70}
    assert abs(sparsity(m) - 0.3) < 1e-9


def test_embedding_fidelity_detects_changes():
    r = torch.randn(100, 16)
    same = embedding_fidelity(r, r)
    assert abs(same["mean_cos"] - 1) < 1e-6 and same["nn_agreement"] == 1.0
    noisy = embedding_fidelity(r, r + 0.5 * torch.randn(100, 16))
    assert 0.5 < noisy["mean_cos"] < 0.99 and noisy["min_cos"] < noisy["mean_cos"]


def test_compare_latency_ratio_sees_a_bigger_model():
    small, big = nn.Linear(64, 64), nn.Sequential(*[nn.Linear(64, 64) for _ in range(30)])
    a, b, ratio = compare_latency(big, small, torch.randn(32, 64), runs=20, warmup=3)
    assert ratio > 2 and a.runs == b.runs == 20


def test_evaluate_reports_every_figure():
    r = evaluate(create_model("lenet5"), dataset="digits", latency_runs=3)
    for k in ("accuracy", "params", "nonzero_params", "size_bytes", "macs", "latency_ms_b1", "latency_ms_b64", "peak_rss_mb"):
        assert k in r
    assert r["params"] == 431_080 and 1_700_000 < r["size_bytes"] < 1_760_000
    assert r["latency_runtime"] == "eager"


def test_static_int8_models_are_timed_as_their_compile_int8_lowering():
    from torchslim.data import load_dataset
    from torchslim.quantization import QLinear, StaticInt8Config, quantize

    m = create_model("lenet5").eval()
    q, _ = quantize(m, StaticInt8Config(), calib_data=load_dataset("digits", "train").subset(64))
    runtime, name = timed_runtime(q)
    x = load_dataset("digits", "test").images[:8]
    assert name == "compile_int8" and isinstance(runtime, torch.fx.GraphModule)
    with torch.inference_mode():
        assert torch.equal(runtime(x), q(x))  # same outputs: accuracy measured eagerly holds for it
    assert timed_runtime(m) == (m, "eager")

    class Branchy(nn.Module):  # a static layer behind a data-dependent branch: torch.fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.fc = QLinear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    b = Branchy()
    assert timed_runtime(b) == (b, "eager")


def test_peak_rss_of_a_child_process_is_its_own():
    # ru_maxrss survives fork + exec on Linux; peak_rss_mb must not report the parent's peak.
    import subprocess
    import sys

    import numpy as np

    from torchslim.measure import peak_rss_mb

    ballast = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MiB resident in this process
    parent = peak_rss_mb()
    code = "from torchslim.measure.latency import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert parent > 400 and child < parent - 300, (parent, child)
    del ballast


def test_reuse_freed_memory_stops_page_faults_on_large_blocks():
    # Mixed block sizes, allocated and freed in rounds as a forward pass does: by default glibc
    # maps them afresh every round (about 8,400 page faults a round); afterwards they are reused.
    import ctypes
    import resource
    import sys

    from torchslim.measure import reuse_freed_memory

    if not sys.platform.startswith("linux"):
        assert reuse_freed_memory() is False
        return
    assert reuse_freed_memory() is True
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]

    def one_round() -> None:
        blocks = []
        for size in (12 << 20, 3 << 20, 6 << 20, 12 << 20):
            p = libc.malloc(size)
            ctypes.memset(p, 1, size)
            blocks.append(p)
        for p in blocks:
            libc.free(p)

    one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        one_round()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 500


def test_quantized_layers_count_the_weights_they_stand_for():
    from torchslim.quantization import (
        DynamicInt8Config,
        StaticInt8Config,
        WeightOnlyConfig,
        quantize,
    )

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    dense = count_params(m)
    assert dense["params"] == 64 * 32 + 32 + 32 * 10 + 10
    # A uniform-ish weight rounds to 0 when |w| < max|w| / (2 * qmax): ~1/127 of them with 8 bits,
    # ~1/63 with the 7-bit weights of CPUs without VNNI, ~1/15 with INT4.
    for config, kept in ((StaticInt8Config(), 0.97), (DynamicInt8Config(), 0.97), (WeightOnlyConfig(bits=4, group_size=32), 0.85)):
        q, _ = quantize(m, config, calib_data=[torch.randn(16, 64)])
        got = count_params(q)
        assert got["params"] == dense["params"]  # not 0: integer buffers stand for the float weights
        assert kept * dense["params"] <= got["nonzero_params"] < dense["params"]  # some weights round to 0


def test_count_macs_counts_integer_and_weight_only_layers_like_their_float_originals():
    """Integer kernels are invisible to FlopCounterMode; the count comes from each layer's shape,
    so a quantized model reports its FP32 original's MACs (not 0), and the caller's mode is kept."""
    import warnings

    from torchslim.measure import count_macs
    from torchslim.models import create_model
    from torchslim.quantization import (
        DynamicInt8Config,
        StaticInt8Config,
        WeightOnlyConfig,
        quantize,
    )

    torch.manual_seed(0)
    m = create_model("lenet5").eval()
    x = torch.randn(32, 1, 28, 28)
    dense = count_macs(m, x[:1])
    assert dense == 2_293_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cfg in (StaticInt8Config(), DynamicInt8Config(), WeightOnlyConfig(bits=4)):
            q, _ = quantize(m, cfg, calib_data=x)
            assert count_macs(q, x[:1]) == dense, type(cfg).__name__
    m.train()
    assert count_macs(m, x[:2]) == 2 * dense and m.training
