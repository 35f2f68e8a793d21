"""Unstructured and N:M masks, applied with ``torch.nn.utils.prune``'s reparametrization.

A pruned layer holds ``weight_orig`` (the trainable parameter), ``weight_mask`` (a buffer) and a
forward pre-hook that recomputes ``weight = weight_orig * weight_mask`` before every forward. So
masks stay enforced through training by construction: the gradient reaching ``weight_orig`` is
``dL/dweight * mask`` (zero where pruned), and whatever weight decay or momentum does to a pruned
entry of ``weight_orig`` never reaches the computed ``weight``. :func:`make_permanent` folds the
mask in and removes the hook.

The criteria compute a score per weight; the lowest-scoring weights are removed, exactly like
``torch.nn.utils.prune.L1Unstructured`` (``topk(..., largest=False)`` over the flattened scores), so
global magnitude pruning gives the same masks as ``prune.global_unstructured``. ``amount`` is the
absolute target: already-pruned weights count towards it and stay pruned (masks only grow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

from torchslim.data.protocol import ModelInput, output_tensor
from torchslim.errors import ConfigError, TargetError, UnknownNameError, suggest
from torchslim.layer_report import Report
from torchslim.measure.size import sparsity as model_sparsity
from torchslim.pruning._common import (
    PRUNABLE,
    effective,
    example_input,
    is_pruned,
    profile,
    tensor_sparsity,
    to_batches,
)
from torchslim.pruning.config import (
    MagnitudeConfig,
    NMConfig,
    PruneConfig,
    RandomConfig,
    TaylorConfig,
    WandaConfig,
)
from torchslim.targets import resolve_targets

_PRUNED_SCORE = -1.0  # below every real score, so already-pruned weights are removed first


@dataclass
class Target:
    name: str
    module: nn.Module
    amount: float | int


# ----------------------------------------------------------------------------- targets and checks
def normalize_targets(targets: Any) -> tuple[dict[str, Any] | None, bool]:
    """``targets`` as a mapping for :func:`resolve_targets`, and whether the default still applies.

    A list of names/patterns selects exactly those layers; a mapping overrides the default per
    layer (a number = that layer's amount, ``None`` = leave it alone, ``True`` = the config's).
    """
    if targets is None:
        return None, True
    if isinstance(targets, str):
        return {targets: True}, False
    if isinstance(targets, Mapping):
        return dict(targets), True
    if isinstance(targets, Sequence):
        return {t: True for t in targets}, False
    raise ConfigError(f"targets must be a list of layer names/patterns or a mapping, got {type(targets).__name__}")


def resolve(model: nn.Module, config: PruneConfig, targets: Any, amount: Any) -> tuple[list[Target], dict[str, str]]:
    """The layers to prune with their amounts, plus ``{name: reason}`` for candidates left alone."""
    mapping, use_default = normalize_targets(targets)
    chosen = resolve_targets(model, mapping, default=True if use_default else None, types=PRUNABLE)
    modules = dict(model.named_modules())
    param = getattr(config, "parameter", "weight")
    out = []
    for name, value in chosen.items():
        if value is True:
            value = amount
        elif isinstance(value, PruneConfig):
            raise ConfigError(f"target {name!r}: give a number (that layer's amount), True or None, not a config")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"target {name!r}: value must be a number (amount), True or None, got {value!r}")
        else:
            try:
                type(config)(**{**config.model_dump(), "amount": value})
            except ConfigError as exc:
                raise ConfigError(f"target {name!r}: {exc}") from None
        m = modules[name]
        if not isinstance(m, PRUNABLE):
            raise TargetError(f"target {name!r} is a {type(m).__name__}; unstructured pruning applies to {[t.__name__ for t in PRUNABLE]}")
        own = [n.removesuffix("_orig") for n, _ in m.named_parameters(recurse=False)]
        if param not in own:
            raise UnknownNameError(
                f"layer {name} ({type(m).__name__}) has no parameter {param!r}; its parameters are {own}.{suggest(param, own)}"
            )
        out.append(Target(name, m, value))
    if not out:
        raise TargetError("no layer selected for pruning: the targets exclude every Linear/Conv layer")
    skipped = {n: "excluded by targets" for n, m in modules.items() if isinstance(m, PRUNABLE) and n not in chosen}
    return out, skipped


def n_to_prune(amount: float | int, numel: int, where: str) -> int:
    if isinstance(amount, int) and not isinstance(amount, bool):
        if amount > numel:
            raise ConfigError(f"amount={amount} weights is more than the {numel} weights of {where}; use a count <= {numel} or a fraction in [0, 1)")
        return amount
    return round(amount * numel)


# ----------------------------------------------------------------------------- scores
def _alive(t: Target, param: str) -> torch.Tensor:
    if hasattr(t.module, param + "_mask"):
        return getattr(t.module, param + "_mask").bool()
    return torch.ones_like(getattr(t.module, param), dtype=torch.bool)


def _masked(score: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    return torch.where(alive, score, torch.full_like(score, _PRUNED_SCORE))


def magnitude_scores(ts: list[Target], param: str) -> list[torch.Tensor]:
    return [_masked(effective(t.module, param).abs().float(), _alive(t, param)) for t in ts]


def random_scores(ts: list[Target], param: str, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [_masked(torch.rand(getattr(t.module, param).shape, generator=g), _alive(t, param)) for t in ts]


@torch.no_grad()
def input_norms(model: nn.Module, ts: list[Target], batches: list[tuple[ModelInput, Any]]) -> dict[str, torch.Tensor]:
    """L2 norm over the calibration data of each input feature (channel) of each target layer."""
    sq: dict[str, torch.Tensor] = {}
    handles = []

    pad: dict[str, torch.Tensor | None] = {"mask": None}

    def hook(name: str) -> Any:
        def fn(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
            x = inp[0].detach().float()
            mask = pad["mask"]
            if isinstance(m, nn.Linear) and mask is not None and x.dim() >= 3 and tuple(mask.shape) == tuple(x.shape[:2]):
                x = x[mask.bool()]  # tokens only: padding positions carry no signal
            if isinstance(m, nn.Linear):
                s = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            else:  # channels are dim 1 for Conv1d/2d/3d
                s = x.transpose(0, 1).reshape(x.shape[1], -1).pow(2).sum(1)
            sq[name] = sq.get(name, 0) + s

        return fn

    for t in ts:
        handles.append(t.module.register_forward_pre_hook(hook(t.name)))
    was = model.training
    model.eval()
    try:
        for inp, _ in batches:
            m = inp.kwargs.get("attention_mask")
            pad["mask"] = m if isinstance(m, torch.Tensor) and m.dim() == 2 else None
            inp(model)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {k: v.sqrt() for k, v in sq.items()}


def wanda_scores(model: nn.Module, ts: list[Target], param: str, batches: list[Any]) -> list[torch.Tensor]:
    norms = input_norms(model, ts, batches)
    out = []
    for t in ts:
        w = effective(t.module, param).abs().float()
        if param != "weight" or t.name not in norms:
            raise ConfigError(f"wanda scores weights by their inputs; it prunes 'weight' only (layer {t.name})")
        n = norms[t.name]
        shape = [1, -1] + [1] * (w.dim() - 2)
        if isinstance(t.module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and t.module.groups > 1:
            # grouped conv: weight dim 1 holds in_channels/groups; each output sees its own group
            g = t.module.groups
            n = n.reshape(g, -1).repeat_interleave(w.shape[0] // g, dim=0)
            out.append(_masked(w * n.reshape(w.shape[0], w.shape[1], *[1] * (w.dim() - 2)), _alive(t, param)))
            continue
        out.append(_masked(w * n.reshape(shape), _alive(t, param)))
    return out


def taylor_scores(model: nn.Module, ts: list[Target], param: str, batches: list[Any]) -> list[torch.Tensor]:
    leaves = [getattr(t.module, param + "_orig") if is_pruned(t.module, param) else getattr(t.module, param) for t in ts]
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in leaves]
    was = model.training
    model.eval()  # keep BatchNorm running statistics untouched
    req = [p.requires_grad for p in leaves]
    for p in leaves:
        p.requires_grad_(True)
    try:
        for inp, y in batches:
            for p in leaves:
                p.grad = None
            F.cross_entropy(output_tensor(inp(model)), y).backward()
            for a, p in zip(acc, leaves, strict=True):
                if p.grad is not None:
                    a += (p.detach() * p.grad).float().pow(2)
    finally:
        model.zero_grad(set_to_none=True)
        for p, r in zip(leaves, req, strict=True):
            p.requires_grad_(r)
        model.train(was)
    return [_masked(a, _alive(t, param)) for a, t in zip(acc, ts, strict=True)]


# ----------------------------------------------------------------------------- masks
def _lowest_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.ones(score.numel(), dtype=torch.float32)
    if k > 0:
        mask[torch.topk(score.reshape(-1), k=k, largest=False).indices] = 0
    return mask.reshape(score.shape)


def masks_from_scores(
    ts: list[Target], scores: list[torch.Tensor], scope: str, amount: float | int, per_output: bool = False
) -> list[torch.Tensor]:
    if scope == "global":
        total = sum(s.numel() for s in scores)
        k = n_to_prune(amount, total, f"the {len(ts)} targeted layers")
        flat = _lowest_k_mask(torch.cat([s.reshape(-1) for s in scores]), k)
        masks, i = [], 0
        for s in scores:
            masks.append(flat[i : i + s.numel()].reshape(s.shape))
            i += s.numel()
        return masks
    masks = []
    for t, s in zip(ts, scores, strict=True):
        if per_output:
            rows = s.reshape(s.shape[0], -1)
            frac = t.amount if isinstance(t.amount, float) else t.amount / s.numel()
            n_to_prune(t.amount, s.numel(), t.name)
            k = round(frac * rows.shape[1])
            keep_idx = torch.topk(rows, k=k, dim=1, largest=False).indices if k else None
            m = torch.ones_like(rows)
            if keep_idx is not None:
                m.scatter_(1, keep_idx, 0.0)
            masks.append(m.reshape(s.shape))
        else:
            masks.append(_lowest_k_mask(s, n_to_prune(t.amount, s.numel(), t.name)))
    return masks


def nm_unfit(w: torch.Tensor, m: int) -> str | None:
    """Why a weight cannot take N:M sparsity in groups of ``m`` input weights (``None``: it can).

    >>> nm_unfit(torch.zeros(8, 6), 4)
    '6 input channels are not a multiple of m=4'
    """
    if w.dim() < 2 or w.shape[1] % m:
        return f"{w.shape[1] if w.dim() > 1 else w.numel()} input channels are not a multiple of m={m}"
    return None


def nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| in each group of ``m`` consecutive input weights (channels-last).

    >>> w = torch.tensor([[1.0, -4.0, 3.0, 2.0]])
    >>> nm_mask(w, 2, 4).tolist()
    [[0.0, 1.0, 1.0, 0.0]]
    """
    # [out, in, *k] -> [out, *k, in] so groups run along input channels
    perm = [0, *range(2, w.dim()), 1]
    wl = w.abs().permute(perm).contiguous()
    groups = wl.reshape(-1, m)
    keep = torch.topk(groups, k=n, dim=1).indices
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0).reshape(wl.shape)
    inv = [0, w.dim() - 1, *range(1, w.dim() - 1)]
    return mask.permute(inv).contiguous()


class DetachAfterForward:
    """Forward hook: after each forward, store ``weight`` (``orig * mask``) detached.

    ``torch.nn.utils.prune``'s pre-hook leaves ``weight`` as a non-leaf tensor of the last
    forward's autograd graph, and ``copy.deepcopy`` refuses non-leaf tensors, so any deepcopy of a
    pruned model that has run a training step would fail. The graph of that forward keeps its own
    reference, so gradients are unaffected; the next forward recomputes the attribute.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, _inp: Any, _out: Any) -> None:
        t = getattr(module, self.name, None)
        if hasattr(module, self.name + "_orig") and isinstance(t, torch.Tensor) and not t.is_leaf:
            setattr(module, self.name, t.detach())


def attach_mask(module: nn.Module, param: str, mask: torch.Tensor) -> None:
    """``torch.nn.utils.prune.custom_from_mask`` plus :class:`DetachAfterForward`."""
    torch_prune.custom_from_mask(module, param, mask)
    setattr(module, param, getattr(module, param).detach())
    module.register_forward_hook(DetachAfterForward(param))


def apply_mask(module: nn.Module, param: str, mask: torch.Tensor) -> None:
    mask = mask.to(dtype=getattr(module, param).dtype)
    if is_pruned(module, param):
        buf = getattr(module, param + "_mask")
        buf.copy_(buf * mask)  # masks only grow: a pruned weight stays pruned
        # what the forward pre-hook would compute, so the attribute is current before any forward
        setattr(module, param, (getattr(module, param + "_orig") * buf).detach())
    else:
        attach_mask(module, param, mask)


# ----------------------------------------------------------------------------- the method
def _layer_stats(t: Target, param: str, macs: dict[str, int]) -> dict[str, Any]:
    w = effective(t.module, param)
    s = tensor_sparsity(w)
    st: dict[str, Any] = {"sparsity": round(s, 6), "nonzero": int((w != 0).sum()), "params": w.numel()}
    if t.name in macs:
        st["macs"] = macs[t.name]
        st["nonzero_macs"] = round(macs[t.name] * (1 - s))
    return st


def prune_unstructured(
    model: nn.Module, config: PruneConfig, targets: Any, calib_data: Any
) -> tuple[nn.Module, Report]:
    """Apply an unstructured or N:M config to ``model`` (already a copy) in place."""
    param = config.parameter  # type: ignore[attr-defined]
    amount = getattr(config, "amount", 0.0)
    ts, skipped = resolve(model, config, targets, amount)
    scope = getattr(config, "scope", "layer")
    if scope == "global" and targets is not None and isinstance(targets, Mapping):
        per_layer = [t.name for t in ts if t.amount != amount]
        if per_layer:
            raise ConfigError(f"per-layer amounts (for {per_layer[:3]}) need scope='layer'; global scope ranks all layers with one amount")

    # Everything that can fail on the user's input is checked before any mask is attached.
    batches = None
    if isinstance(config, WandaConfig | TaylorConfig):
        batches = to_batches(calib_data, config.calib_samples, config.batch_size, need_labels=isinstance(config, TaylorConfig),
                             model=model)
    example = example_input(calib_data, config.input_shape, model)
    prof = profile(model, example)
    macs_before_layers, macs_before = prof.layer_macs, prof.macs
    sparsity_before = model_sparsity(model)
    before = {t.name: _layer_stats(t, param, macs_before_layers) for t in ts}

    nm_skipped: dict[str, str] = {}
    explicit = set(normalize_targets(targets)[0] or {})
    n_m = (config.n, config.m) if isinstance(config, NMConfig) else getattr(config, "n_m", None)
    if n_m is not None:
        n, m = n_m
        keep_ts = []
        for t in ts:
            reason = nm_unfit(effective(t.module, param), m)
            if reason is not None:
                if t.name in explicit:
                    raise TargetError(f"layer {t.name} cannot take {n}:{m} sparsity: {reason}")
                nm_skipped[t.name] = reason
                continue
            keep_ts.append(t)
        if not keep_ts:
            raise TargetError(f"no targeted layer can take {n}:{m} sparsity: {nm_skipped}")
        ts = keep_ts
        if isinstance(config, WandaConfig):  # the best-scored n of each m inputs (pruned weights score 0)
            scores = [sc.clamp(min=0) for sc in wanda_scores(model, ts, param, batches)]  # type: ignore[arg-type]
        else:
            scores = [effective(t.module, param).float() for t in ts]
        masks = [nm_mask(sc, n, m) * _alive(t, param).float() for sc, t in zip(scores, ts, strict=True)]
    else:
        if isinstance(config, MagnitudeConfig):
            scores = magnitude_scores(ts, param)
        elif isinstance(config, RandomConfig):
            scores = random_scores(ts, param, config.seed)
        elif isinstance(config, WandaConfig):
            scores = wanda_scores(model, ts, param, batches)  # type: ignore[arg-type]
        elif isinstance(config, TaylorConfig):
            scores = taylor_scores(model, ts, param, batches)  # type: ignore[arg-type]
        else:  # pragma: no cover - dispatch guarantees one of the above
            raise ConfigError(f"unsupported config {type(config).__name__}")
        per_output = isinstance(config, WandaConfig) and config.per_output
        masks = masks_from_scores(ts, scores, scope, amount, per_output=per_output)
        masks = [mk * _alive(t, param).float() for mk, t in zip(masks, ts, strict=True)]
    for t, mk in zip(ts, masks, strict=True):
        if mk.sum() == 0:
            raise ConfigError(
                f"pruning would remove every weight of {t.name}.{param} ({mk.numel()} weights), which disconnects "
                "the network; lower the amount for this layer (targets={...: amount}) or exclude it (None)"
            )

    for t, mk in zip(ts, masks, strict=True):
        apply_mask(t.module, param, mk)

    report = Report("prune", config.method)
    macs_after_layers = macs_before_layers  # masks do not change dense MACs
    for t in ts:
        after = _layer_stats(t, param, macs_after_layers)
        detail = f"{n_m[0]}:{n_m[1]}" if n_m is not None else f"{scope} amount={t.amount}"
        report.add(t.name, type(t.module).__name__, "pruned", detail, before=before[t.name], after=after)
    for name, why in {**skipped, **nm_skipped}.items():
        report.add(name, type(model.get_submodule(name)).__name__, "skipped", why)
    n_total = sum(e.after["params"] for e in report.layers if e.action == "pruned")
    report.summary = {
        "method": config.method,
        "scope": scope,
        "layers_pruned": len(ts),
        "targeted_sparsity_before": sum(before[t.name]["params"] - before[t.name]["nonzero"] for t in ts) / n_total,
        "targeted_sparsity_after": sum(e.after["params"] - e.after["nonzero"] for e in report.layers if e.action == "pruned") / n_total,
        "model_sparsity_before": sparsity_before,
        "model_sparsity_after": model_sparsity(model),
        "macs_before": macs_before,
        "macs_after": macs_before,
        "nonzero_macs_after": sum(e.after.get("nonzero_macs", 0) for e in report.layers if e.action == "pruned")
        + (macs_before or 0) - sum(e.before.get("macs", 0) for e in report.layers if e.action == "pruned")
        if example is not None else None,
    }  # fmt: skip
    return model, report
