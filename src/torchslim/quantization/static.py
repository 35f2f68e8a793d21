"""Static INT8 post-training quantization: fold BatchNorm, calibrate, choose ranges, convert.

Steps (each checked against the model's FX graph, see :mod:`torchslim.quantization.graph`):

1. fold every BatchNorm into its convolution (a copy of the model; the user's stays intact);
2. quantize weights (symmetric, per channel or per layer);
3. run the calibration data twice through the float model: min/max, then histograms, at every
   activation the integer model will quantize;
4. pick each activation's range with the configured observer, or for ``auto`` greedily, point
   by point, the observer whose range gives the lowest error of the model's output;
5. swap each layer for :class:`~torchslim.quantization.static_modules.QConv2d` /
   :class:`~torchslim.quantization.static_modules.QLinear` with those parameters.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree

from torchslim.data.protocol import ModelInput, output_tensor
from torchslim.layer_report import Report
from torchslim.quantization.graph import (
    ObserverPoint,
    Plan,
    fold_batchnorm,
    insert_points,
    make_plan,
    trace,
)
from torchslim.quantization.observers import OBSERVERS, ActivationStats, qparams
from torchslim.quantization.static_modules import QConv2d, QLinear


@dataclass(frozen=True)
class Precision:
    """Integer ranges of one conversion."""

    weight_bits: int = 8
    activation_bits: int = 8
    reduce_range: str = "weights"
    per_channel: bool = True
    symmetric: bool = False

    @property
    def weight_qmax(self) -> int:
        q = 2 ** (self.weight_bits - 1) - 1
        return min(q, 63) if self.reduce_range == "weights" else q

    @property
    def act_bits(self) -> int:
        return min(self.activation_bits, 7) if self.reduce_range == "activations" else self.activation_bits

    @property
    def act_levels(self) -> int:
        return 2**self.act_bits - 1

    def act_qparams(self, lo: float, hi: float) -> tuple[float, int]:
        return qparams(lo, hi, bits=self.act_bits, symmetric=self.symmetric)


def quantize_weight(w: torch.Tensor, prec: Precision) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric weight quantization: ``(int8 values, float32 scale per output channel)``.

    Per layer, the one scale is repeated per channel (the kernel takes a vector).
    """
    w = w.detach().float()
    qmax = prec.weight_qmax
    if prec.per_channel:
        amax = w.abs().reshape(w.shape[0], -1).amax(1)
    else:
        amax = w.abs().max().expand(w.shape[0])
    scale = (amax / qmax).clamp(min=1e-12).contiguous()
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -qmax - 1, qmax).to(torch.int8)
    return q, scale


@torch.inference_mode()
def collect_stats(model: nn.Module, plan: Plan, data: Sequence[ModelInput], batch_size: int, histograms: bool) -> dict[str, ActivationStats]:
    """Min/max (and histograms) at every planned activation over the calibration batches."""
    gm = trace(model)
    points = insert_points(gm, plan.observe)
    stats = {p: ActivationStats() for p in points}
    for p, mod in points.items():
        mod.stats = stats[p]  # type: ignore[union-attr]
        mod.mode = "minmax"  # type: ignore[union-attr]
    for b in data:
        b(gm)
    if histograms:
        for mod in points.values():
            mod.stats.start_histogram()  # type: ignore[union-attr]
            mod.mode = "hist"  # type: ignore[union-attr]
        for b in data:
            b(gm)
    return stats


def first_samples(data: Sequence[ModelInput], n: int) -> list[ModelInput]:
    """The first ``n`` samples of the calibration batches."""
    out: list[ModelInput] = []
    total = 0
    for b in data:
        if total >= n:
            break
        take = b if total + b.batch_size <= n else b.resized(n - total)
        out.append(take)
        total += take.batch_size
    return out


class _GraphRunner:
    """Runs a traced graph node by node, from any node on, reusing what was computed before it.

    ``auto`` decides points one at a time; everything upstream of a point is the same for all its
    candidates, so it is computed once (``advance``) and only the rest of the graph runs per
    candidate (``finish``). Only the values still read downstream are kept.
    """

    def __init__(self, gm: fx.GraphModule, batch: ModelInput) -> None:
        self.interp = fx.Interpreter(gm, garbage_collect_values=False)
        self.nodes = list(gm.graph.nodes)
        self.index = index = {n: i for i, n in enumerate(self.nodes)}
        self.dies_at: list[list[fx.Node]] = [[] for _ in self.nodes]
        for n in self.nodes:
            last = max((index[u] for u in n.users), default=index[n])
            self.dies_at[last].append(n)
        bound = inspect.signature(gm.forward).bind(*batch.args, **batch.kwargs)
        bound.apply_defaults()
        self.inputs = {n: bound.arguments[str(n.target).lstrip("*")] for n in self.nodes if n.op == "placeholder"}
        self.env: dict[fx.Node, Any] = {}
        self.pos = 0  # env holds the values computed before node ``pos`` that later nodes read

    def _run(self, env: dict[fx.Node, Any], start: int, stop: int) -> Any:
        self.interp.env = env
        out = None
        for k in range(start, stop):
            n = self.nodes[k]
            out = env[n] = self.inputs[n] if n.op == "placeholder" else self.interp.run_node(n)
            for d in self.dies_at[k]:
                del env[d]
        return out

    def advance(self, node: fx.Node) -> None:
        """Compute, with the current state of the graph's modules, everything before ``node``."""
        i = self.index[node]
        if i < self.pos:
            self.env, self.pos = {}, 0
        self._run(self.env, self.pos, i)
        self.pos = i

    def finish(self) -> Any:
        """The graph's output, running only the nodes from the current position on.

        Works on a copy of the kept values (in-place ops downstream must not change them), whose
        tensors share storage as the originals do, so aliasing behaves as in a full forward.
        """
        storages: dict[int, torch.UntypedStorage] = {}

        def fork(v: Any) -> Any:
            if not isinstance(v, torch.Tensor):
                return v
            st = v.untyped_storage()
            if st.data_ptr() not in storages:
                storages[st.data_ptr()] = st.clone()
            copy_ = storages[st.data_ptr()]
            return torch.empty(0, dtype=v.dtype, device=v.device).set_(copy_, v.storage_offset(), v.size(), v.stride())

        env = {n: pytree.tree_map(fork, v) for n, v in self.env.items()}
        return self._run(env, self.pos, len(self.nodes))


@torch.inference_mode()
def auto_ranges(
    model: nn.Module, plan: Plan, stats: dict[str, ActivationStats], prec: Precision, data: Sequence[ModelInput],
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]], percentile: float,
) -> tuple[dict[str, tuple[float, float]], dict[str, str], dict[str, dict[str, float]]]:  # fmt: skip
    """Per activation, the observer whose range minimises the error of the model's output.

    Greedy in the plan's order: each point is decided with the earlier points already
    fake-quantized at their chosen ranges and the weights fake-quantized, so errors that compound
    are seen. The error is the squared difference to the float model's output over ``data``.
    Observers that give the same ``(scale, zero_point)`` are evaluated once (ties go to the
    earlier one in ``OBSERVERS``), and the graph upstream of the point is run once per point: each
    candidate only runs the nodes from the point on.
    """
    refs = [output_tensor(b(model)) for b in data]
    fq = copy.deepcopy(model)
    mods = dict(fq.named_modules())
    for name, (q, s) in weights.items():
        shape = (-1,) + (1,) * (q.dim() - 1)
        mods[name].weight.data = q.float() * s.view(shape)
    gm = trace(fq)
    points = insert_points(gm, plan.observe)
    node_at = {m.point: n for n in gm.graph.nodes if n.op == "call_module" and isinstance(m := gm.get_submodule(n.target), ObserverPoint)}  # fmt: skip
    runners = [_GraphRunner(gm, b) for b in data]
    chosen: dict[str, tuple[float, float]] = {}
    names: dict[str, str] = {}
    errors: dict[str, dict[str, float]] = {}
    for p in plan.observe:
        mod: Any = points[p]
        for r in runners:
            r.advance(node_at[p])
        mod.mode = "fake"
        cand = {o: stats[p].range(o, bits=prec.act_bits, symmetric=prec.symmetric, percentile=percentile) for o in OBSERVERS}
        by_qp: dict[tuple[float, int], float] = {}
        errs = {}
        for o, rng in cand.items():
            qp = prec.act_qparams(*rng)
            if qp not in by_qp:
                mod.fake = (*qp, prec.act_levels)
                by_qp[qp] = sum(float(((output_tensor(r.finish()) - ref) ** 2).sum()) for r, ref in zip(runners, refs, strict=True))
            errs[o] = by_qp[qp]
        best = min(errs, key=lambda o: (errs[o], OBSERVERS.index(o)))
        chosen[p], names[p], errors[p] = cand[best], best, errs
        s, zp = prec.act_qparams(*cand[best])
        mod.fake = (s, zp, prec.act_levels)
    return chosen, names, errors


def build_quantized(
    model: nn.Module, plan: Plan, qps: dict[str, tuple[float, int]], prec: Precision,
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> nn.Module:  # fmt: skip
    """Swap each planned layer of (a copy of) the folded model for its integer version.

    ``qps`` maps each observed FX node to its activation ``(scale, zero_point)``.
    """
    qmodel = copy.deepcopy(model)
    mods = dict(qmodel.named_modules())
    for name, lp in plan.layers.items():
        m = mods[name]
        q, s = weights[name]
        in_qp = qps[plan.input_point(lp)]
        out_qp = None if lp.out_float else qps[lp.out_node]
        new: QConv2d | QLinear
        if isinstance(m, nn.Conv2d):
            new = QConv2d(
                m.in_channels, m.out_channels, list(m.kernel_size), list(m.stride), list(m.padding),  # type: ignore[arg-type]
                list(m.dilation), m.groups, m.bias is not None, fuse=lp.fuse, out_float=lp.out_float,
                act_levels=prec.act_levels, accum_inplace=lp.accum_inplace,
            )  # fmt: skip
            other = plan.other_point(lp)
            if other is not None:
                new.set_qparams(input=qps[plan.input_point(lp)], accum=qps[other])
        else:
            new = QLinear(m.in_features, m.out_features, m.bias is not None, fuse=lp.fuse, out_float=lp.out_float,
                          act_levels=prec.act_levels)  # fmt: skip
        new.weight_int8.copy_(q)
        new.weight_scale.copy_(s)
        if m.bias is not None:
            new.bias.copy_(m.bias.detach().float())
        new.set_qparams(input=in_qp, output=out_qp)
        _set_module(qmodel, name, new)
    return qmodel.eval()


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def prepare_float(model: nn.Module, fold_bn: bool) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A deep copy in eval mode with BatchNorms folded (the user's model is not modified)."""
    m = copy.deepcopy(model).eval()
    folded = fold_batchnorm(m) if fold_bn else []
    return m, folded


def quantize_static(
    model: nn.Module, layers: Sequence[str], data: Sequence[ModelInput], *, prec: Precision, observer: str,
    batch_size: int, percentile: float, auto_samples: int, report: Report, fold_bn: bool = True,
    qparams_override: dict[str, tuple[float, int]] | None = None,
    weight_override: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> nn.Module:  # fmt: skip
    """The whole static flow on an already validated model and calibration tensor."""
    fm, folded = prepare_float(model, fold_bn)
    for conv, bn in folded:
        report.add(bn, "BatchNorm2d", "folded", f"folded into {conv}")
    plan = make_plan(trace(fm), layers)
    mods = dict(fm.named_modules())
    weights = weight_override or {name: quantize_weight(mods[name].weight, prec) for name in plan.layers}
    chosen_by: dict[str, str] = {}
    if qparams_override is not None:
        qps = qparams_override
    else:
        need_hist = observer in ("percentile", "mse", "kl", "auto")
        stats = collect_stats(fm, plan, data, batch_size, need_hist)
        if observer == "auto":
            ranges, chosen_by, _ = auto_ranges(fm, plan, stats, prec, first_samples(data, auto_samples), weights, percentile)
        else:
            ranges = {
                p: st.range(observer, bits=prec.act_bits, symmetric=prec.symmetric, percentile=percentile)
                for p, st in stats.items()
            }  # fmt: skip
        qps = {p: prec.act_qparams(*r) for p, r in ranges.items()}
    qmodel = build_quantized(fm, plan, qps, prec, weights)
    for name, lp in plan.layers.items():
        m = mods[name]
        q, s = weights[name]
        shape = (-1,) + (1,) * (q.dim() - 1)
        w = m.weight.detach()
        err = float((q.float() * s.view(shape) - w).norm() / w.norm().clamp(min=1e-12))
        obs = chosen_by.get(plan.input_point(lp), observer) if qparams_override is None else "trained"
        detail = (f"{'per-channel' if prec.per_channel else 'per-tensor'} w{prec.weight_bits}"
                  f"{'(7-bit range)' if prec.weight_qmax == 63 and prec.weight_bits == 8 else ''} "
                  f"a{prec.act_bits} {'symmetric' if prec.symmetric else 'asymmetric'}, input range: {obs}"
                  f"{', fused ' + lp.fuse.replace('_', '+') if lp.fuse != 'none' else ''}"
                  f"{', float output' if lp.out_float else ''}")  # fmt: skip
        if chosen_by and not lp.out_float:
            detail += f", output range: {chosen_by.get(lp.out_node, observer)}"
        report.add(
            name, type(m).__name__, "int8-static", detail,
            before={"weight_bytes": w.numel() * 4, "dtype": "float32"},
            after={"weight_bytes": q.numel() + s.numel() * 4, "dtype": "int8", "weight_rel_error": round(err, 5)},
        )  # fmt: skip
    return qmodel


def observer_points(module: nn.Module) -> list[ObserverPoint]:
    return [m for m in module.modules() if isinstance(m, ObserverPoint)]
