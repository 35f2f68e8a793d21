"""GPTQ: group-wise INT4 (or INT8) weight-only quantization with error compensation.

GPTQ (Frantar et al., 2023) quantizes a Linear layer's weight one input column at a time and
spreads each column's rounding error over the columns not yet quantized, weighted by the
inverse Hessian ``H = X^T X`` of the layer's inputs on calibration data. The result is stored
in torchslim's :class:`~torchslim.quantization.WeightOnlyLinear` (asymmetric, FP16 scale and
uint8 zero point per group, INT4 packed two per byte), so it saves, loads and exports like any
weight-only layer.

Calibration runs block by block: the inputs of block ``i`` are computed from the already
quantized blocks ``< i``, the Hessians of its Linear layers are accumulated from them, the
block is quantized, and only its outputs are kept for block ``i + 1``. Peak memory is the model
plus one block's activations and Hessians, whatever the depth.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import CompatibilityError, ConfigError, DataError
from torchslim.layer_report import Report
from torchslim.measure import peak_rss_mb
from torchslim.quantization.calibrate import (
    CalibrationBatch,
    as_calibration,
    block_inputs,
    block_output,
    feed,
    finite_rows,
    transformer_blocks,
)
from torchslim.quantization.config import GPTQConfig
from torchslim.surgery import replace_module, weight_read_by_parent
from torchslim.targets import resolve_targets


def _group_params(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric ``(scale fp16-representable, zero point)`` per row of ``w`` ``[out, g]``.

    Same grid as :func:`torchslim.quantization.modules.quantize_groupwise`: 0 is exact and the
    FP16 scale is rounded up so no value clips.
    """
    qmax = 2**bits - 1
    lo = w.amin(1).clamp(max=0.0)
    hi = w.amax(1).clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp(min=1e-8).half()
    scale = torch.where(scale.float() < (hi - lo) / qmax, torch.nextafter(scale, torch.tensor(65504.0, dtype=torch.half)), scale)
    s = scale.float()
    zp = torch.clamp(torch.round(-lo / s), 0, qmax)
    return s, zp


def _group_params_sym(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric ``(scale, zero point 0)`` per row: ``max|w| / (2^(b-1) - 1)``, float32."""
    s = (w.abs().amax(1) / (2 ** (bits - 1) - 1)).clamp(min=1e-12)
    return s, torch.zeros_like(s)


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, *, bits: int = 4, group_size: int = 32,
                  damp: float = 0.01, block_size: int = 128, act_order: bool = False, symmetric: bool = False,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:  # fmt: skip
    """GPTQ one weight ``[out, in]`` given ``H = X^T X`` ``[in, in]``.

    Returns ``(q [out, in], scale [out, groups], zero_point [out, groups], info)``: asymmetric
    (default) gives uint8 ``q``, fp16 scales and uint8 zero points, as ``WeightOnlyLinear``
    stores them; ``symmetric=True`` gives int8 ``q`` in ``[-(2^(b-1)-1), 2^(b-1)-1]``, float32
    scales and zero points 0 (per-channel INT8 when ``group_size >= in``).
    Groups are over the original column order.

    >>> torch.manual_seed(0) and None
    >>> w, x = torch.randn(8, 64), torch.randn(256, 64)
    >>> q, s, z, info = gptq_quantize(w, x.T @ x, bits=4, group_size=32)
    >>> q.shape, s.shape, bool(info["gptq_out_err"] <= info["rtn_out_err"])
    (torch.Size([8, 64]), torch.Size([8, 2]), True)
    """
    W = weight.detach().float().clone()
    out_f, in_f = W.shape
    group_size = min(group_size, in_f)
    block_size = max(block_size - block_size % group_size, group_size)
    params = _group_params_sym if symmetric else _group_params
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damp * float(torch.diag(H).mean()))
    groups = math.ceil(in_f / group_size)
    # Group parameters come from the weights as GPTQ has updated them when the group starts; with
    # act_order the groups still follow the original columns, so fix them up front instead.
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(in_f)
    inv = torch.argsort(perm)
    scales = torch.zeros(out_f, groups)
    zps = torch.zeros(out_f, groups)
    fixed = act_order
    if fixed:
        for g in range(groups):
            scales[:, g], zps[:, g] = params(W[:, g * group_size : (g + 1) * group_size], bits)
    W = W[:, perm]
    Hp = H[perm][:, perm]
    try:
        L = torch.linalg.cholesky(Hp)
        Hinv = torch.cholesky_inverse(L)
        U = torch.linalg.cholesky(Hinv, upper=True).float()
    except RuntimeError as exc:  # not positive definite even after damping
        raise DataError(f"GPTQ: the calibration Hessian is singular ({exc}); use more calibration sentences or a larger damp") from exc
    # Work on W^T so each column GPTQ visits is a contiguous row, and the rank-1 updates are addr_.
    Wt = W.T.contiguous()  # [in, out]
    Qt = torch.zeros_like(Wt)
    St, Zt = scales.T.contiguous(), zps.T.contiguous()  # [groups, out]
    cols = perm.tolist()
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        W1 = Wt[i1:i2].clone()
        Err = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        diag = U1.diagonal().tolist()
        for i in range(i2 - i1):
            col = cols[i1 + i]
            g = col // group_size
            if not fixed and col % group_size == 0:
                sg, zg = params(W1[i : i + group_size].T, bits)
                St[g], Zt[g] = sg, zg
            s_, z_ = St[g], Zt[g]
            w = W1[i]
            q = torch.round(w / s_).add_(z_).clamp_(qmin, qmax)
            Qt[i1 + i] = q
            err = (w - (q - z_) * s_).div_(diag[i])
            W1[i:].addr_(U1[i, i:], err, alpha=-1.0)
            Err[i] = err
        Wt[i2:].addmm_(U[i1:i2, i2:].T, Err, alpha=-1.0)
    Q = Qt.T
    scales, zps = St.T.contiguous(), Zt.T.contiguous()
    Q = Q[:, inv]
    deq = (Q - zps.repeat_interleave(group_size, 1)[:, :in_f]) * scales.repeat_interleave(group_size, 1)[:, :in_f]
    w0 = weight.detach().float()
    Hf = hessian.float()
    rtn = _rtn(w0, bits, group_size, symmetric)

    norm = max(float(((w0 @ Hf) * w0).sum()), 1e-12)

    def out_err(wq: torch.Tensor) -> float:  # ||X (Wq - W)^T||^2 / ||X W^T||^2
        d = wq - w0
        return float(((d @ Hf) * d).sum()) / norm

    info = {"gptq_out_err": out_err(deq), "rtn_out_err": out_err(rtn)}
    if symmetric:
        return Q.to(torch.int8), scales, zps, info
    return Q.to(torch.uint8), scales.half(), zps.to(torch.uint8), info


def _rtn(w: torch.Tensor, bits: int, group_size: int, symmetric: bool = False) -> torch.Tensor:
    out = torch.empty_like(w)
    params = _group_params_sym if symmetric else _group_params
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    for g0 in range(0, w.shape[1], group_size):
        blk = w[:, g0 : g0 + group_size]
        s, z = params(blk, bits)
        q = torch.clamp(torch.round(blk / s[:, None]) + z[:, None], lo, hi)
        out[:, g0 : g0 + group_size] = (q - z[:, None]) * s[:, None]
    return out


def _next_inputs(block: nn.Module, args: list[Any], kwargs: dict[str, Any], keep: torch.Tensor) -> tuple[list[Any], dict[str, Any], torch.Tensor]:
    out = block_output(block(*args, **kwargs))
    if args:
        return [out, *args[1:]], kwargs, keep
    return args, {**kwargs, "hidden_states": out}, keep


def _to_weight_only(lin: nn.Linear, q: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, bits: int, group_size: int) -> nn.Module:
    from torchslim.quantization.modules import WeightOnlyLinear

    return WeightOnlyLinear.from_quantized(lin, q, scale, zp, bits=bits, group_size=group_size)


@torch.no_grad()
def quantize_gptq(
    model: nn.Module,
    calibration: Sequence[CalibrationBatch],
    config: GPTQConfig | None = None,
    *,
    targets: dict[str, Any] | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, Report]:
    """A copy of ``model`` whose Linear layers are GPTQ-quantized (weight-only, group-wise).

    A transformer (a ``nn.ModuleList`` of blocks) is quantized block by block, each block's
    Hessians taken from the outputs of the already quantized blocks before it; Linear layers
    outside the blocks (a classifier head, a pooler) and models without such a list are
    calibrated in one pass over the whole model. ``calibration``: tokenized batches
    (:func:`torchslim.transformers.calibration_batches`) or any data of the one data protocol.
    ``inplace=True`` quantizes ``model`` itself (no copy: peak memory is the model plus one
    block's working set).

    >>> from torchslim.transformers.testing import tiny_bert, tiny_tokenizer
    >>> from torchslim.transformers import calibration_batches
    >>> cal = calibration_batches(tiny_tokenizer(), ["a sample sentence", "another one"] * 8)
    >>> q, rep = quantize_gptq(tiny_bert(), cal)
    >>> rep.summary["quantized"]
    12
    >>> import torch
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    >>> q, rep = quantize_gptq(mlp, [torch.randn(16, 64)])
    >>> rep.summary["quantized"], type(q[0]).__name__
    (2, 'WeightOnlyLinear')
    """
    config = config or GPTQConfig()
    if isinstance(calibration, (list, tuple)) and not calibration:
        raise DataError("GPTQ calibration needs at least one batch")
    calibration = as_calibration(calibration, model, config.max_calib_samples)
    t0 = time.perf_counter()
    rss0 = peak_rss_mb()
    model = (model if inplace else copy.deepcopy(model)).eval()
    chosen = resolve_targets(model, targets, default=True, types=[nn.Linear])
    chosen = {n: v for n, v in chosen.items() if isinstance(model.get_submodule(n), nn.Linear)}
    parent_reads = {n: why for n, why in weight_read_by_parent(model).items() if n in chosen}
    report = Report("quantize", f"gptq-int{config.bits}")
    for name, why in parent_reads.items():
        report.add(name, "Linear", "skipped", why)
    chosen = {n: v for n, v in chosen.items() if n not in parent_reads}
    if not chosen:
        raise ConfigError("no Linear layer to quantize: the targets leave none")
    try:
        blocks_name, blocks = transformer_blocks(model)
    except CompatibilityError:
        blocks_name, blocks = "", None
    done = 0
    keep_rows: dict[str, torch.Tensor | None] = {"mask": None}  # the token rows of the batch running now
    if blocks is not None:
        # Inputs to block 0 for every batch; each later block's inputs are the previous outputs.
        states = [(list(args), dict(kwargs), keep) for args, kwargs, keep in block_inputs(model, calibration)]
        for bi, block in enumerate(blocks):
            prefix = f"{blocks_name}.{bi}."
            lins = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear) and prefix + n in chosen}

            def run_block(block: nn.Module = block, states: list[Any] = states) -> None:
                for args, kwargs, keep in states:
                    keep_rows["mask"] = keep
                    block(*args, **kwargs)

            done += _quantize_layers(block, prefix, lins, run_block, keep_rows, config, report)
            # Outputs of the quantized block feed the next one.
            states = [_next_inputs(block, args, kwargs, keep) for args, kwargs, keep in states]
    inside = f"{blocks_name}." if blocks is not None else None
    rest = {n: model.get_submodule(n) for n in chosen if inside is None or not n.startswith(inside)}
    if rest:  # layers outside the blocks (or every layer): one pass over the (partly quantized) model

        def run_model() -> None:
            feed(model, calibration, [], keep_rows)

        done += _quantize_layers(model, "", rest, run_model, keep_rows, config, report)
    report.summary.update(
        quantized=done, calib_wall_s=time.perf_counter() - t0, calibration_samples=sum(b.batch_size for b in calibration),
        peak_rss_mb=peak_rss_mb(), peak_rss_growth_mb=peak_rss_mb() - rss0,
    )  # fmt: skip
    return model, report


def _quantize_layers(root: nn.Module, prefix: str, lins: dict[str, nn.Module], run: Any,
                     keep_rows: dict[str, torch.Tensor | None], config: GPTQConfig, report: Report) -> int:  # fmt: skip
    """Accumulate each Linear's Hessian ``X^T X`` while ``run()`` feeds the calibration through
    ``root``, then GPTQ-quantize them (names in ``lins`` are relative to ``root``)."""
    grams: dict[str, torch.Tensor] = {}
    hooks = []
    for n, m in lins.items():

        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], n: str = n) -> None:
            x = finite_rows(inp[0], keep_rows["mask"])
            g = x.T @ x
            grams[n] = grams[n] + g if n in grams else g

        hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in hooks:
            h.remove()
    done = 0
    for n, lin in lins.items():
        full = prefix + n
        if n not in grams:
            report.add(full, "Linear", "skipped", "not reached by the calibration data")
            continue
        q, s, z, info = gptq_quantize(lin.weight, grams[n], bits=config.bits, group_size=config.group_size,
                                      damp=config.damp, block_size=config.block_size, act_order=config.act_order)  # fmt: skip
        replace_module(root, n, _to_weight_only(lin, q, s, z, config.bits, config.group_size))  # type: ignore[arg-type]
        done += 1
        report.add(
            full, "Linear", f"int{config.bits}-gptq", f"group {config.group_size}, asymmetric, fp16 scales",
            before={"bits": 32, "rel_out_err": None},
            after={"bits": config.bits, "rel_out_err": info["gptq_out_err"], "rtn_rel_out_err": info["rtn_out_err"]},
        )  # fmt: skip
    return done
