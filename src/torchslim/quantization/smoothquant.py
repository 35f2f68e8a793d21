"""INT8 quantization of every Linear layer of a Hugging Face encoder, quality first.

What it takes on all-MiniLM-L6-v2 (mean / min cosine to FP32 embeddings and nearest-neighbour
agreement over real sentences; fake quantization and ONNX Runtime runs):

* per-channel INT8 weights alone: 0.9997 / 0.9992 / 0.976;
* plus one activation scale per tensor (ONNX Runtime's dynamic INT8): 0.993 / 0.986 / 0.88;
  SmoothQuant, 7-bit weights or GPTQ rounding do not lift it past 0.995 / 0.985 / 0.89;
* plus one scale per token: 0.998 / 0.995 / 0.92;
* per token after SmoothQuant (alpha 0.5): 0.999 / 0.998 / 0.95-0.97;
* on the benchmark's 1,024 sentences through ONNX Runtime, with 7-bit weights (this CPU has no
  AVX-512 VNNI): per token on every layer with GPTQ rounding 0.9990 / 0.9981 / 0.954; with the
  recipe below, GPTQ rounding gives 0.960 NN agreement where round-to-nearest weights give 0.940
  (calibration 8.6 s instead of 2.3 s), hence GPTQ by default;
* one scale per tensor is enough for the attention output projection alone (0.9989 / 0.9980 /
  0.960; the benchmark's recipe sets it through ``targets``), not for query/key/value (0.941)
  or either FFN layer (0.932 / 0.834) (``benchmarks/bench_transformers.py --int8-sweep``).

Run in PyTorch through :func:`torchslim.quantization.compile_int8` (``torch.compile``), the
per-token scales cost little: they are fused into the LayerNorm / GELU / residual kernels around
each GEMM. There the benchmark keeps per-token activations on every layer (0.9989 / 0.9978 /
0.955, ``benchmarks/results/transformers.md``, row ``torchslim-int8-compiled``).

So the method is SmoothQuant migration (an explicit per-channel multiply, see
:class:`~torchslim.quantization.smoothing.SmoothedLinear`; layers that read the same tensor, such
as query/key/value, share one vector), per-channel symmetric weights and dynamic activations with
one scale per token -- torchslim's :class:`~torchslim.quantization.Int8DynamicLinear`. Options:
keep the few most sensitive layers in float (ranked by the embedding error each causes alone),
GPTQ rounding of the INT8 weights, 7-bit weights for CPUs without AVX-512 VNNI (whose u8 x s8
instruction saturates int16 pair sums), and calibrated static activations with a per-layer
observer. Padded tokens and non-finite values never enter a statistic.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import ConfigError, DataError
from torchslim.layer_report import Report
from torchslim.measure.metrics import pooled_embedding
from torchslim.quantization.calibrate import (
    CalibrationBatch,
    as_calibration,
    collect_stats,
)
from torchslim.quantization.config import SmoothQuantConfig
from torchslim.quantization.smoothing import SmoothedLinear, shared_input_groups, smoothing_scales
from torchslim.surgery import avoid_fused_paths, replace_module, weight_read_by_parent
from torchslim.targets import resolve_targets


@torch.inference_mode()
def _pooled(model: nn.Module, batches: Sequence[CalibrationBatch]) -> torch.Tensor:
    outs = []
    for b in batches:
        out = b(model)
        h = (out if isinstance(out, torch.Tensor) else out[0]).float()
        outs.append(torch.nn.functional.normalize(pooled_embedding(h, b.attention_mask), dim=-1))
    return torch.cat(outs)


def _weight_bits(config: SmoothQuantConfig) -> int:
    if config.weight_bits != "auto":
        return int(config.weight_bits)
    from torchslim.quantization.modules import act_qmax

    return 8 if act_qmax() == 127 else 7


def static_act_bits() -> int:
    """Static activations: 8 bits with AVX-512 VNNI, 7 without (vpmaddubsw's int16 pair sums)."""
    from torchslim.quantization.modules import act_qmax

    return 8 if act_qmax() == 127 else 7


def _quantized_layer(lin: nn.Linear, smooth: torch.Tensor | None, activation: str, gram: torch.Tensor | None,
                     act_range: tuple[float, float] | None = None, bits: int = 8) -> nn.Module:  # fmt: skip
    from torchslim.quantization.modules import Int8DynamicLinear, quantize_weight_per_channel
    from torchslim.quantization.static_modules import QLinear

    inner = lin if smooth is None else SmoothedLinear.wrap(lin, smooth).inner
    if activation == "static":
        assert act_range is not None
        q: nn.Module = QLinear.from_float(inner, act_range=act_range, act_bits=static_act_bits())
    else:
        q = Int8DynamicLinear.from_float(inner, activation=activation)  # type: ignore[arg-type]
    if bits != 8:
        qw, sc = quantize_weight_per_channel(inner.weight, bits=bits)
        q.weight_int8.copy_(qw)
        q.weight_scale.copy_(sc)
    if gram is not None:  # GPTQ rounding of the per-channel INT8 weight (symmetric, one group)
        from torchslim.quantization.gptq import gptq_quantize

        if smooth is not None:  # the inner layer sees x * (1 / smooth)
            d = 1.0 / smooth
            gram = gram * d[:, None] * d[None, :]
        qw, sc, _, _ = gptq_quantize(inner.weight, gram, bits=bits, group_size=inner.in_features, symmetric=True)
        q.weight_int8.copy_(qw)
        q.weight_scale.copy_(sc[:, 0])
    if smooth is None:
        return q
    wrapped = SmoothedLinear(q, lin.in_features)
    wrapped.input_scale.copy_(1.0 / smooth)
    return wrapped


def quantize_smoothquant(
    model: nn.Module,
    calibration: Sequence[CalibrationBatch],
    config: SmoothQuantConfig | None = None,
    *,
    targets: dict[str, Any] | None = None,
) -> tuple[nn.Module, Report]:
    """A copy of ``model`` with INT8 Linear layers; returns ``(model, report)``.

    ``calibration``: tokenized batches (:func:`~torchslim.transformers.calibration_batches`)
    or any data of :mod:`torchslim.data.protocol`: the method works on every model with Linear layers.
    ``targets``: the one targeting rule over Linear layers: ``None`` keeps a layer in float,
    ``"per_token"`` / ``"per_tensor"`` choose its activation granularity, anything else uses
    ``config.activation``.

    >>> from torchslim.transformers.testing import tiny_bert, tiny_tokenizer
    >>> from torchslim.transformers import calibration_batches
    >>> cal = calibration_batches(tiny_tokenizer(), ["a sample sentence", "another one"])
    >>> q, rep = quantize_smoothquant(tiny_bert(), cal)
    >>> sorted({e.action for e in rep.layers})
    ['int8-dynamic']
    """
    config = config or SmoothQuantConfig()
    if isinstance(calibration, (list, tuple)) and not calibration:
        raise DataError("INT8 calibration needs at least one batch of sentences")
    calibration = as_calibration(calibration, model, config.max_calib_samples)
    layers = resolve_targets(model, targets, default=True, types=[nn.Linear])
    layers = {n: v for n, v in layers.items() if isinstance(model.get_submodule(n), nn.Linear)}
    parent_reads = {n: why for n, why in weight_read_by_parent(model).items() if n in layers}
    layers = {n: v for n, v in layers.items() if n not in parent_reads}
    if not layers:
        raise ConfigError("no Linear layer to quantize: the targets leave none")
    t0 = time.perf_counter()
    bits = _weight_bits(config)
    model = copy.deepcopy(model).eval()
    stats = collect_stats(model, calibration, list(layers), gram=config.weight_rounding == "gptq")
    report = Report("quantize", "encoder-int8")
    unused = [n for n in layers if n not in stats]
    quantized: dict[str, nn.Module] = {}
    group_of: dict[str, list[str]] = {}
    if config.smoothquant_alpha is not None:
        for g in shared_input_groups(model, calibration[0], [n for n in layers if n in stats]):
            for n in g:
                group_of[n] = g
    acts: dict[str, str] = {}
    smooths: dict[str, torch.Tensor | None] = {}
    for name in layers:
        lin = model.get_submodule(name)
        if name not in stats:
            continue
        smooth = None
        if config.smoothquant_alpha is not None:
            peers = group_of.get(name, [name])  # layers reading the same input share one vector
            smooth = smoothing_scales(stats[name].absmax, [model.get_submodule(p).weight for p in peers], config.smoothquant_alpha)
        act = layers[name] if layers[name] in ("per_token", "per_tensor", "static") else config.activation
        acts[name] = act
        smooths[name] = smooth
    statics = [n for n, a in acts.items() if a == "static"]
    ranges = _static_ranges(model, calibration, statics, smooths, config.observer) if statics else {}
    for name, act in acts.items():
        lin = model.get_submodule(name)
        rng = ranges[name][:2] if name in ranges else None
        quantized[name] = _quantized_layer(lin, smooths[name], act, stats[name].gram, rng, bits)
    kept: dict[str, float] = {}
    if config.keep_float:
        kept = _most_sensitive(model, quantized, calibration[:1], config.keep_float)
    for name, q in quantized.items():
        if name in kept:
            continue
        replace_module(model, name, q)
    fused_off = avoid_fused_paths(model, [n for n in quantized if n not in kept])
    for name, why in parent_reads.items():
        report.add(name, "Linear", "skipped", why)
    for name in layers:
        before = {"bits": 32, "act_absmax": float(stats[name].absmax.max()) if name in stats else None}
        if name in unused:
            report.add(name, "Linear", "skipped", "never called on the calibration sentences (e.g. an unused pooler)", before=before)
        elif name in kept:
            report.add(name, "Linear", "kept-float", f"among the {config.keep_float} most sensitive (alone: 1 - cos = {kept[name]:.2e})", before=before)
        else:
            detail = f"per-channel int{bits} weights ({config.weight_rounding} rounding), {acts[name].replace('_', '-')} int8 activations"
            if name in ranges:
                detail += f" (observer {ranges[name][2]}, range {ranges[name][0]:.3g}..{ranges[name][1]:.3g})"
            after: dict[str, Any] = {"bits": 8}
            if config.smoothquant_alpha is not None:
                s = quantized[name].input_scale  # type: ignore[union-attr]
                after["act_absmax"] = float((stats[name].absmax * s).max())
                detail += f", SmoothQuant alpha {config.smoothquant_alpha}"
            report.add(name, "Linear", "int8-static" if acts[name] == "static" else "int8-dynamic", detail, before=before, after=after)
    report.summary.update(
        calibration_samples=sum(b.batch_size for b in calibration), calib_wall_s=time.perf_counter() - t0,
        quantized=len(quantized) - len(kept), kept_float=sorted(kept), fused_path_off=fused_off, truncated=sum(getattr(b, "truncated", 0) for b in calibration),
    )  # fmt: skip
    return model, report


def _most_sensitive(model: nn.Module, quantized: dict[str, nn.Module], batches: Sequence[CalibrationBatch], k: int) -> dict[str, float]:
    """Quantize one layer at a time; the ``k`` whose embedding error (1 - mean cos) is largest."""
    ref = _pooled(model, batches)
    errs: dict[str, float] = {}
    for name, q in quantized.items():
        orig = model.get_submodule(name)
        replace_module(model, name, q)
        try:
            errs[name] = float(1 - (_pooled(model, batches) * ref).sum(1).mean())
        finally:
            replace_module(model, name, orig)
    return dict(sorted(errs.items(), key=lambda kv: -kv[1])[:k])


@torch.inference_mode()
def _static_ranges(
    model: nn.Module, batches: Sequence[CalibrationBatch], names: list[str], smooths: dict[str, torch.Tensor | None], observer: str
) -> dict[str, tuple[float, float, str]]:
    """``{layer: (lo, hi, observer used)}`` for static activation quantization.

    Only the Linear inputs are observed, over real tokens, with non-finite values dropped (an
    additive ``-inf`` attention mask never reaches a Linear here, and would not survive
    :func:`finite_rows` if it did). ``auto`` tries minmax, percentile (99.99) and MSE and keeps,
    per layer, the range with the smallest output error on a sample of calibration tokens.
    """
    from torchslim.quantization.calibrate import feed, finite_rows
    from torchslim.quantization.observers import ActivationStats, fake_quantize, qparams

    bits = static_act_bits()
    obs = {n: ActivationStats() for n in names}
    sample: dict[str, torch.Tensor] = {}
    keep: dict[str, torch.Tensor | None] = {"mask": None}

    def run(fn_name: str) -> None:
        hooks = []
        for n in names:
            def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], n: str = n) -> None:
                x = finite_rows(inp[0], keep["mask"])
                s = smooths.get(n)
                if s is not None:
                    x = x / s
                if fn_name == "minmax":
                    obs[n].observe_minmax(x)
                    if n not in sample:
                        sample[n] = x[:2048].clone()
                else:
                    obs[n].observe_histogram(x)

            hooks.append(model.get_submodule(n).register_forward_pre_hook(hook))
        feed(model, batches, hooks, keep)

    run("minmax")
    for n in names:
        obs[n].start_histogram()
    run("histogram")
    out: dict[str, tuple[float, float, str]] = {}
    candidates = ("minmax", "percentile", "mse") if observer == "auto" else (observer,)
    for n in names:
        lin = model.get_submodule(n)
        w = lin.weight.detach() * (smooths[n] if smooths.get(n) is not None else 1.0)
        x = sample[n]
        ref = x @ w.T
        best: tuple[float, float, str] | None = None
        best_err = float("inf")
        for c in candidates:
            lo, hi = obs[n].range(c, bits=bits)
            scale, zp = qparams(lo, hi, bits=bits)
            err = float(((fake_quantize(x, scale, zp, bits) @ w.T - ref) ** 2).mean())
            if err < best_err:
                best, best_err = (lo, hi, c), err
        assert best is not None
        out[n] = best
    return out
