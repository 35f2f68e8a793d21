"""The speed guard's logic on injected timings: verdicts, requirements, reasons read from the layers."""

import math
from typing import ClassVar

import pytest
import torch
import torch.nn as nn

import torchslim.measure.speed as speed_mod
from torchslim.errors import ConfigError, SpeedError, TorchSlimError
from torchslim.measure import SLOWER_BELOW, SpeedCheck, speed_check, speed_reasons
from torchslim.measure.latency import LatencyStats
from torchslim.measure.speed import check_required_speedup, reference_label
from torchslim.models import create_model


def _check(ms, ref_ms, ms_b1=None, ref_b1=None, reasons=()):
    return SpeedCheck(latency_ms=ms, reference_latency_ms=ref_ms, batch_size=64, runs=30, reasons=list(reasons),
                      latency_ms_b1=ms_b1, reference_latency_ms_b1=ref_b1)


def test_verdicts_by_speedup_and_margin():
    assert SLOWER_BELOW == 0.90
    fast = _check(2.0, 10.0, 0.1, 0.15)
    assert fast.speedup == 5.0 and fast.speedup_b1 == pytest.approx(1.5)
    assert fast.faster and not fast.slower
    assert fast.verdict() == "5.00x faster than FP32 at batch 64 (1.50x at batch 1)"
    slow = _check(8.89, 5.67, reasons=["unstructured sparsity runs on dense kernels"])
    assert slow.slower and not slow.faster and slow.speedup == pytest.approx(0.638, abs=1e-3)
    assert slow.verdict() == "SLOWER than FP32 (0.64x at batch 64): unstructured sparsity runs on dense kernels"
    even = _check(5.0, 4.9, 0.3, 0.3, reasons=["r1", "r2"])  # 0.98x: within the noise margin, and no gain
    assert not even.slower and not even.faster
    assert even.verdict() == ("no faster than FP32 (0.98x at batch 64, 1.00x at batch 1: within the 10% noise "
                              "margin): r1; r2")  # fmt: skip


def test_a_model_slower_at_batch_1_only_is_slower():
    c = _check(5.0, 6.0, 2.5, 0.42, reasons=["weight-shared layers ..."])
    assert c.speedup == pytest.approx(1.2) and c.worst == (1, pytest.approx(0.168))
    assert c.slower
    assert c.verdict().startswith("SLOWER than FP32 (0.17x at batch 1; 1.20x at batch 64): weight-shared")


def test_slower_without_a_known_cause_says_how_to_check():
    c = _check(10.0, 5.0)
    assert "no layer of the model declares a slower kernel" in c.verdict()
    assert "torchslim --threads 1 bench MODEL --compare OTHER" in c.verdict()


def test_require_raises_speed_error_with_figures_and_reasons():
    c = _check(8.89, 5.67, 0.5, 0.4, reasons=["Huffman-coded layers ..."])
    c.require(None)
    c.require(0.6)
    with pytest.raises(SpeedError) as exc:
        c.require(1.0)
    msg = str(exc.value)
    assert msg.startswith("the compressed model runs at 0.64x the speed of FP32 at batch 64 (8.890 ms vs 5.670 ms, "
                          "timed interleaved, 30 runs; 0.80x at batch 1), below the required 1.00x: Huffman-coded")  # fmt: skip
    assert "--require-speedup" in msg and "nothing was written" in msg
    assert isinstance(exc.value, TorchSlimError) and isinstance(exc.value, RuntimeError)
    with pytest.raises(SpeedError, match="at batch 1"):  # every measured batch size must meet it
        _check(1.0, 3.0, 0.5, 0.4).require(1.0)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "2"])
def test_required_speedup_must_be_a_positive_number(bad):
    with pytest.raises(ConfigError, match="must be a number above 0"):
        check_required_speedup(bad)
    with pytest.raises(ConfigError):
        _check(1.0, 1.0).require(bad)


def test_as_dict_round_trips():
    c = _check(3.0, 2.0, 0.2, 0.3, reasons=["r"])
    d = c.as_dict()
    assert d["slower"] is True and d["speedup"] == pytest.approx(2 / 3) and d["verdict"] == c.verdict()
    assert SpeedCheck.from_dict(d) == c


# --- reasons, from the layers ------------------------------------------------------------------------


def test_a_dense_fp32_model_has_no_reasons():
    assert speed_reasons(create_model("lenet5")) == []
    assert reference_label(create_model("lenet5")) == "FP32"


def test_unstructured_sparsity_is_named_with_its_share_of_zeros():
    m = create_model("lenet300")
    with torch.no_grad():
        m.fc1.weight[:, :392] = 0  # 50% of fc1
        m.fc2.weight[:, :10] = 0  # 3% of fc2: not sparse
    (reason,) = speed_reasons(m)
    assert reason.startswith("unstructured sparsity runs on dense kernels (50% zeros in 1 layer)")
    assert "structured (channel) pruning" in reason


class _Decoding(nn.Linear):
    speed_note: ClassVar[str] = "my layers decode their weights per call"


def test_a_user_layer_declares_its_note_duck_typed():
    m = nn.Sequential(_Decoding(4, 4), nn.ReLU(), _Decoding(4, 2), nn.Linear(2, 2))
    assert speed_reasons(m) == ["my layers decode their weights per call (2 layers: 0, 2)"]
    assert reference_label(m) == "the reference model"


def test_torchslim_layers_declare_why_they_are_not_faster():
    from torchslim.compression import (
        HuffmanCodingConfig,
        WeightSharingConfig,
        huffman_code,
        share_weights,
    )
    from torchslim.quantization import DynamicInt8Config, WeightOnlyConfig, quantize

    m = create_model("lenet300")
    wo, _ = quantize(m, WeightOnlyConfig(bits=4, group_size=32))
    assert speed_reasons(wo)[0].startswith("weight-only INT4/INT8 layers unpack and dequantize their weights on every "
                                           "call, then run the FP32 matrix product: they shrink the file, not the "
                                           "compute (3 layers: fc1, fc2, fc3)")  # fmt: skip
    dyn, _ = quantize(m, DynamicInt8Config())
    assert speed_reasons(dyn)[0].startswith("dynamic INT8 layers quantize their input on every call")
    shared, _ = share_weights(m, WeightSharingConfig(bits=3))
    (r,) = speed_reasons(shared)
    assert r.startswith("weight-shared layers rebuild their FP32 weights from the codebook") and "(3 layers" in r
    coded, _ = huffman_code(shared, HuffmanCodingConfig(index_bits=4))
    (r,) = speed_reasons(coded)
    assert r.startswith("Huffman-coded layers are decoded to dense FP32 weights once, at load")


def test_smoothed_layers_declare_their_input_scaling():
    from torchslim.quantization.smoothing import SmoothedLinear

    m = nn.Sequential(SmoothedLinear.wrap(nn.Linear(4, 4), torch.ones(4)))
    assert speed_reasons(m) == ["SmoothQuant layers rescale their input on every call (one elementwise multiply per "
                                "layer) (1 layer: 0)"]  # fmt: skip


@pytest.mark.parametrize(("bf16", "advice"), [(True, "use BF16 instead"), (False, "keep FP32 on this CPU")])
def test_fp16_weights_on_a_cpu_without_fp16_suggest_bf16_or_fp32(monkeypatch, bf16, advice):
    monkeypatch.setattr(speed_mod, "cpu_has_fp16", lambda: False)
    monkeypatch.setattr(speed_mod, "cpu_has_bf16", lambda: bf16)
    m = create_model("lenet300").half()
    (r,) = speed_reasons(m)
    assert r.startswith("FP16 weights (3 layers) on a CPU without native FP16 arithmetic") and advice in r
    assert reference_label(m) == "the reference model"
    monkeypatch.setattr(speed_mod, "cpu_has_fp16", lambda: True)
    assert speed_reasons(m) == []


def test_bf16_weights_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(speed_mod, "cpu_has_bf16", lambda: False)
    (r,) = speed_reasons(create_model("lenet300").to(torch.bfloat16))
    assert r.startswith("BF16 weights (3 layers) on a CPU without BF16 instructions")


# --- speed_check, with compare_latency replaced by fixed timings -------------------------------------


def _fake_compare(ms_by_batch, calls):
    """compare_latency(reference, model, x) returning fixed medians {batch: (model_ms, reference_ms)}."""

    def fake(fn_a, fn_b, example, *, runs, warmup, threads):
        b = example.shape[0]
        calls.append((fn_a, fn_b, b, runs, warmup))
        mine, ref = ms_by_batch[b]
        a = LatencyStats(ref, ref, ref, runs, b)
        m = LatencyStats(mine, mine, mine, runs, b)
        return a, m, ref / mine

    return fake


def test_speed_check_times_both_batches_interleaved_on_the_runtimes(monkeypatch):
    calls = []
    monkeypatch.setattr(speed_mod, "compare_latency", _fake_compare({64: (8.0, 4.0), 1: (0.5, 0.25)}, calls))
    model, ref = create_model("lenet300").train(), create_model("lenet300")
    with torch.no_grad():
        model.fc1.weight[:, :300] = 0

    def runtime(x):
        return model(x)

    c = speed_check(model, ref, torch.randn(3, 1, 28, 28), runtime=runtime, runtime_name="compiled", runs=7)
    # slower at the first measurement: measured a second time, and slower again
    assert [(a is ref, b is runtime, bs, runs, warm) for a, b, bs, runs, warm in calls] == [
        (True, True, 64, 7, 2), (True, True, 1, 7, 2)] * 2  # fmt: skip
    assert (c.latency_ms, c.reference_latency_ms, c.latency_ms_b1, c.reference_latency_ms_b1) == (8.0, 4.0, 0.5, 0.25)
    assert c.speedup == 0.5 and c.slower and c.trials == 2 and c.runtime == "compiled" and c.reference_runtime == "eager"
    assert c.how() == "timed interleaved, 7 runs, measured twice: the faster kept"
    assert c.reasons[0].startswith("unstructured sparsity runs on dense kernels (38% zeros in 1 layer)")
    assert model.training  # modes restored


def test_a_slower_first_measurement_is_confirmed_or_cleared(monkeypatch):
    """A busy CPU can make one measurement slow: a result is flagged only when a second one agrees."""
    timings = iter([{64: (8.0, 4.0), 1: (0.5, 0.25)}, {64: (4.1, 4.0), 1: (0.2, 0.25)}])
    calls = []

    def fake(fn_a, fn_b, example, *, runs, warmup, threads):
        b = example.shape[0]
        if not calls or calls[-1] == 1:
            fake.now = next(timings)
        calls.append(b)
        mine, ref = fake.now[b]
        return LatencyStats(ref, ref, ref, runs, b), LatencyStats(mine, mine, mine, runs, b), ref / mine

    monkeypatch.setattr(speed_mod, "compare_latency", fake)
    m = create_model("lenet300")
    c = speed_check(m, m, torch.randn(1, 1, 28, 28))
    assert calls == [64, 1, 64, 1] and c.trials == 2 and not c.slower
    assert (c.latency_ms, c.latency_ms_b1) == (4.1, 0.2)  # each batch size keeps its faster measurement
    calls.clear()
    timings = iter([{64: (8.0, 4.0), 1: (0.5, 0.25)}])
    c = speed_check(m, m, torch.randn(1, 1, 28, 28), confirm=False)
    assert calls == [64, 1] and c.trials == 1 and c.slower


def test_speed_check_without_batch_1_and_bad_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(speed_mod, "compare_latency", _fake_compare({64: (1.0, 2.0)}, calls))
    m = create_model("lenet300")
    c = speed_check(m, m, torch.randn(1, 1, 28, 28), batch_1=False)
    assert [bs for *_, bs, _, _ in calls] == [64] and c.speedup_b1 is None and c.faster
    for kwargs in ({"runs": 0}, {"batch": 0}, {"margin": 1.5}):
        with pytest.raises(ConfigError):
            speed_check(m, m, torch.randn(1, 1, 28, 28), **kwargs)
