"""Structured channel pruning on Torch-Pruning's dependency graph: smaller layers, real speed-ups.

Torch-Pruning traces the model once and groups every parameter coupled to an output channel:
the convolution's filter, the BatchNorm entries after it, the input channels of every consumer,
every other layer joined to it by a residual addition, the matching slices of a concatenation,
and depthwise convolutions (whose input and output channels are one). Removing a channel removes
it from the whole group, so the pruned network is a smaller dense network.

torchslim plans every group first (importance, ratio, rounding, the checks that reject a plan
that would empty a layer), and only then removes channels, so a bad ratio fails before any layer
changes. Importance criteria are Torch-Pruning's: L1/L2 magnitude of the whole group, first-order
Taylor, BatchNorm scale, random (a control).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.data.protocol import ModelInput, output_tensor
from torchslim.errors import CompatibilityError, ConfigError, TargetError, require
from torchslim.layer_report import Report
from torchslim.methods import one_line
from torchslim.modes import unfused_attention
from torchslim.pruning._common import copy_model, example_input, profile, to_batches
from torchslim.pruning.config import StructuredConfig
from torchslim.pruning.unstructured import normalize_targets
from torchslim.targets import resolve_targets

ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
_SHAPED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


@dataclass
class _Plan:
    root: nn.Module
    name: str
    handler: Any
    channels: int
    ratio: float
    importance: torch.Tensor  # one score per position within a channel group
    ch_groups: int = 1  # equal slices that each lose the same positions (grouped conv, heads)
    n_prune: int = 0  # positions removed from every slice
    idxs: list[int] | None = None  # channels to remove, positions in every slice


def _shape(m: nn.Module) -> dict[str, int]:
    if isinstance(m, nn.Linear):
        return {"in_channels": m.in_features, "out_channels": m.out_features}
    if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return {"in_channels": m.in_channels, "out_channels": m.out_channels}
    if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        return {"in_channels": m.num_features, "out_channels": m.num_features}
    if isinstance(m, nn.GroupNorm):
        return {"in_channels": m.num_channels, "out_channels": m.num_channels}
    if isinstance(m, nn.LayerNorm):
        return {"in_channels": m.normalized_shape[-1], "out_channels": m.normalized_shape[-1]}
    return {}


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters(recurse=False))


def _round_keep(keep: int, channels: int, round_to: int | None) -> int:
    if not round_to or round_to == 1:
        return keep
    if channels < round_to:
        return channels  # cannot reach a multiple; leave the layer whole (reported)
    k = int(math.floor(keep / round_to + 0.5)) * round_to
    return min(k, channels - channels % round_to)


def _channel_groups(group: Any, names: dict[nn.Module, str], root: str, channels: int) -> int:
    """Into how many equal slices the group's channels fall. A grouped convolution, a GroupNorm or an
    attention layer's heads only stay consistent if every slice loses the same positions (as
    Torch-Pruning's own pruners do with ``in/out_channel_groups`` and ``num_heads``)."""
    found: dict[str, int] = {}
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.groups > 1:
            if not m.groups == m.in_channels == m.out_channels:  # depthwise: each channel is its own group already
                found[names.get(m, str(m))] = m.groups
        elif isinstance(m, nn.GroupNorm) and m.num_groups > 1:
            found[names.get(m, str(m))] = m.num_groups
        elif isinstance(m, nn.MultiheadAttention) and m.num_heads > 1:
            found[names.get(m, str(m))] = m.num_heads
    n = max(found.values(), default=1)
    if channels % n or any(n % g for g in found.values()):
        raise CompatibilityError(
            f"the channels of layer {root} are split into {sorted(set(found.values()))} groups by {sorted(found)}; no "
            f"channel removal keeps all of them whole. Keep this group whole with targets={{{root!r}: None}}"
        )
    return n


# Torch-Pruning carries channel indices through a reshape that splits a channel into `stride`
# positions by repeating each index `stride` times. Around a cycle of reshapes it does not model
# (Swin's window attention: the residual stream reshaped to heads x head_dim, coupled back through
# the relative-position bias table) the list grows by that factor on every turn and never repeats,
# so the walk only ends when memory does (MemoryError, or the OOM killer). A real group's indices
# are channels of some layer: never more than the largest weight has elements.
_MIN_INDEX_LIMIT = 1 << 16


def _index_limit(model: nn.Module) -> int:
    """The most channel indices one step of a real group can hold in ``model``."""
    return max([_MIN_INDEX_LIMIT, *(p.numel() for p in model.parameters())])


class _RunawayIndices(Exception):
    pass


@contextmanager
def _bounded_index_mapping(limit: int) -> Iterator[None]:
    """Make Torch-Pruning's reshape index mapping raise ``_RunawayIndices`` past ``limit`` indices."""
    index_mapping = importlib.import_module("torch_pruning.dependency.index_mapping")
    cls = getattr(index_mapping, "_FlattenIndexMapping", None)
    if cls is None:  # another Torch-Pruning layout: nothing to bound
        yield
        return
    unbounded = cls.__call__

    def bounded(self: Any, idxs: Any) -> Any:
        if not self.reverse and len(idxs) * self._stride > limit:
            raise _RunawayIndices(f"{len(idxs)} channel indices x {self._stride} through a reshape")
        return unbounded(self, idxs)

    cls.__call__ = bounded
    try:
        yield
    finally:
        cls.__call__ = unbounded


def _importance(tp: Any, kind: str) -> Any:
    imp = tp.importance
    return {
        "l1": lambda: imp.GroupMagnitudeImportance(p=1),
        "l2": lambda: imp.GroupMagnitudeImportance(p=2),
        "taylor": lambda: imp.GroupTaylorImportance(),
        "bn_scale": lambda: imp.BNScaleImportance(),
        "random": lambda: imp.RandomImportance(),
    }[kind]()


def prune_structured(
    model: nn.Module, config: StructuredConfig, targets: Any, calib_data: Any
) -> tuple[nn.Module, Report]:
    """Remove channels from ``model`` (already a copy) in place; see the module docstring."""
    tp = require("torch_pruning", "prune")
    example = example_input(calib_data, config.input_shape, model)
    if example is None:
        raise ConfigError("structured pruning traces the model: pass calib_data= (inputs) or set input_shape in the config")
    batches = None
    if config.importance == "taylor":
        batches = to_batches(calib_data, config.calib_samples, 128, need_labels=True, model=model)

    mapping, use_default = normalize_targets(targets)
    chosen = resolve_targets(model, mapping, default=True if use_default else None, types=ROOT_TYPES)
    ratios: dict[str, float] = {}
    for name, v in chosen.items():
        if v is True:
            v = config.ratio
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"target {name!r}: value must be a ratio in [0, 1), True or None, got {v!r}")
        if float(v) >= 1.0:
            raise ConfigError(f"ratio {v} for layer {name} would remove all of its channels; use a ratio in [0, 1)")
        if float(v) < 0.0:
            raise ConfigError(f"ratio {v} for layer {name} is negative; use a ratio in [0, 1)")
        ratios[name] = float(v)

    was = model.training
    model.eval()
    names = {m: n for n, m in model.named_modules()}
    prof_before = profile(model, example)
    outputs = prof_before.output_layers
    ignored = [m for n, m in model.named_modules() if isinstance(m, ROOT_TYPES) and (n not in ratios or n in outputs)]
    # Torch-Pruning follows the autograd graph, so frozen parameters (a distillation teacher, a
    # frozen backbone) would hide every layer; trace with gradients on, restore the flags after.
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    for prm in model.parameters():
        prm.requires_grad_(True)
    dg = _build_graph(tp, model, example)

    if batches is not None:
        model.zero_grad(set_to_none=True)
        for inp, y in batches:
            F.cross_entropy(output_tensor(inp(model)), y).backward()
    importance = _importance(tp, config.importance)

    skipped: dict[str, str] = {n: "produces the model output" for n in outputs}
    skipped.update({n: "excluded by targets" for n, m in model.named_modules() if isinstance(m, ROOT_TYPES) and n not in chosen and n not in skipped})
    plans: list[_Plan] = []
    for group in _all_groups(dg, model, ignored, names, skipped):
        root, handler = group[0].dep.target.module, group[0].dep.handler
        name = names.get(root, str(root))
        members = _group_members(dg, group, names)[0]
        channels = dg.get_out_channels(root)
        ch_groups = _channel_groups(group, names, name, channels)
        ratio = min(ratios[n] for n in members if n in ratios) if any(n in ratios for n in members) else config.ratio
        imp = importance(group)
        if imp is None:
            skipped[name] = f"importance {config.importance!r} undefined for this group (e.g. no BatchNorm)"
            continue
        imp = imp.detach().float().cpu()
        if imp.numel() != channels:
            raise CompatibilityError(f"layer {name}: importance has {imp.numel()} entries for {channels} channels; this coupling is unsupported")
        imp = imp.view(ch_groups, -1).mean(0)  # a position's score over all slices (Torch-Pruning's rule)
        plans.append(_Plan(root, name, handler, channels // ch_groups, ratio, imp, ch_groups))
    if batches is not None:
        model.zero_grad(set_to_none=True)
    if not plans:
        why = "; ".join(f"{n}: {r}" for n, r in skipped.items() if not r.startswith(("excluded", "produces")))
        raise TargetError(
            "structured pruning found no prunable channel group: every group touches an excluded or output layer"
            f"{' or cannot be followed (' + why + ')' if why else ''}. Layers joined by residual additions or "
            "concatenations are pruned together; target all of them (e.g. 're:layer1.*') or none"
        )

    if config.scope == "global" and plans:
        scores = torch.cat([p.importance for p in plans])
        owner = torch.cat([torch.full((p.channels,), i) for i, p in enumerate(plans)])
        total = int(config.ratio * scores.numel())
        order = torch.argsort(scores)[:total]
        counts = torch.bincount(owner[order], minlength=len(plans))
        for p, c in zip(plans, counts.tolist(), strict=True):
            p.n_prune = min(c, int(config.max_layer_ratio * p.channels))
    else:
        for p in plans:
            p.n_prune = int(p.ratio * p.channels)
    emptied = []
    for p in plans:
        # the kept total (per-slice count x slices) must be a multiple of round_to
        step = config.round_to // math.gcd(config.round_to, p.ch_groups) if config.round_to else None
        keep = _round_keep(p.channels - p.n_prune, p.channels, step)
        if keep <= 0:
            emptied.append(f"{p.name} ({p.channels * p.ch_groups})")
        elif keep == p.channels and p.n_prune and step and p.channels < step:
            skipped[p.name] = f"{p.channels * p.ch_groups} channels in {p.ch_groups} group(s), too few for round_to={config.round_to}"
        p.n_prune = p.channels - keep
    if emptied:
        raise ConfigError(
            f"ratio {config.ratio} with round_to={config.round_to} would remove all channels of "
            f"{len(emptied)} layer(s): {', '.join(emptied)}; lower the ratio or round_to, or exclude those layers "
            "with targets={name: None}"
        )
    starved = []
    for p in plans:
        if not p.n_prune:
            continue
        local = torch.argsort(p.importance)[: p.n_prune].tolist()
        p.idxs = [i + g * p.channels for g in range(p.ch_groups) for i in local]
        member = _emptied_member(dg, dg.get_pruning_group(p.root, p.handler, p.idxs), names)
        if member is not None:
            starved.append((p, member))
    if starved:
        # Torch-Pruning maps a group's channels onto fewer positions of a coupled layer (Swin's
        # residual stream onto its attention heads, say), so a ratio that suits the group empties it.
        whole = ", ".join(f"{p.name!r}: None" for p, _ in starved)
        raise CompatibilityError(
            "removing the chosen channels would leave a coupled layer with none: "
            + "; ".join(f"{len(p.idxs or [])} of {p.channels * p.ch_groups} channels of layer {p.name} map to "
                        f"{member}" for p, member in starved)  # fmt: skip
            + f". Keep these groups whole with targets={{{whole}}}; the other groups are still pruned"
        )

    macs_before, layer_macs_before = prof_before.macs, prof_before.layer_macs
    shapes_before = {n: (_shape(m), _params(m)) for n, m in model.named_modules() if isinstance(m, _SHAPED)}
    for p in plans:
        if not p.idxs:
            continue
        group = dg.get_pruning_group(p.root, p.handler, p.idxs)
        assert dg.check_pruning_group(group), f"{p.name}: checked before any removal"
        group.prune()
        _check_runs(model, example, p.name, group, names)
    model.train(was)
    for n, prm in model.named_parameters():
        prm.requires_grad_(n not in frozen)

    report = Report("prune", "structured")
    prof_after = profile(model, example)  # also proves the pruned model still runs
    macs_after, layer_macs_after = prof_after.macs, prof_after.layer_macs
    for n, m in model.named_modules():
        if n not in shapes_before:
            continue
        (sb, pb), sa = shapes_before[n], _shape(m)
        if sb == sa:
            continue
        before = {**sb, "params": pb, "macs": layer_macs_before.get(n)}
        after = {**sa, "params": _params(m), "macs": layer_macs_after.get(n)}
        dout, din = sb["out_channels"] - sa["out_channels"], sb["in_channels"] - sa["in_channels"]
        report.add(n, type(m).__name__, "pruned", f"removed {dout} output / {din} input channels", before=before, after=after)
    for n, why in skipped.items():
        report.add(n, type(model.get_submodule(n)).__name__, "skipped", why)
    report.summary = {
        "method": "structured", "importance": config.importance, "scope": config.scope, "round_to": config.round_to,
        "groups": len(plans), "groups_pruned": sum(1 for p in plans if p.n_prune),
        "channels_removed": sum(p.n_prune * p.ch_groups for p in plans),
        "channels_before": sum(p.channels * p.ch_groups for p in plans),
        "macs_before": macs_before, "macs_after": macs_after,
        "mac_reduction": (macs_before / macs_after) if macs_before and macs_after else None,
        "params_before": sum(pb for _, pb in shapes_before.values()),
        "params_after": sum(_params(m) for n, m in model.named_modules() if n in shapes_before),
    }  # fmt: skip
    return model, report


def _build_graph(tp: Any, model: nn.Module, example: ModelInput) -> Any:
    """Torch-Pruning's dependency graph of ``model`` traced on ``example``, or a
    :class:`CompatibilityError` saying why it could not be traced."""
    try:
        with unfused_attention():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example.example())
    except Exception as exc:  # Torch-Pruning raises plain errors from tracing
        raise CompatibilityError(f"Torch-Pruning could not trace this model for structured pruning: {type(exc).__name__}: {exc}") from exc


def _group_members(dg: Any, group: Any, names: dict[nn.Module, str]) -> tuple[list[str], list[str]]:
    """The layers (or bare parameters) of ``group`` that lose output channels, and those that lose input channels."""
    pnames = {p: n for n, p in dg.model.named_parameters()}
    outs: dict[str, None] = {}
    ins: dict[str, None] = {}
    for dep, _ in group:
        m = dep.target.module
        name = names.get(m) or pnames.get(m)
        if name is None:  # an op Torch-Pruning follows (elementwise, reshape, concat), not a layer
            continue
        if dg.is_out_channel_pruning_fn(dep.handler):
            outs[name] = None
        elif dg.is_in_channel_pruning_fn(dep.handler):
            ins[name] = None
    return list(outs), [n for n in ins if n not in outs]


def _emptied_member(dg: Any, group: Any, names: dict[nn.Module, str]) -> str | None:
    """The first layer (or bare parameter) of ``group`` that would lose all of its channels, as
    Torch-Pruning's ``check_pruning_group`` decides it, named with what it would lose."""
    pnames = {p: n for n, p in dg.model.named_parameters()}
    for dep, idxs in group:
        m = dep.target.module
        if dg.is_out_channel_pruning_fn(dep.handler):
            n, side = dg.get_out_channels(m), "output"
        elif dg.is_in_channel_pruning_fn(dep.handler):
            n, side = dg.get_in_channels(m), "input"
        else:
            continue
        if n is not None and n <= len(idxs):
            return f"all {n} {side} channels of {names.get(m) or pnames.get(m, type(m).__name__)}"
    return None


@torch.no_grad()
def _check_runs(model: nn.Module, example: ModelInput, root: str, group: Any, names: dict[nn.Module, str]) -> None:
    # The model ran before pruning, so a failure now means its code fixes this group's width
    # (e.g. torchvision's ViT reshapes to ``self.hidden_dim``), which no graph can see. One
    # forward per group names the group to keep; pruning is one-off, so its cost is small.
    try:
        example(model)
    except Exception as exc:  # the model's own shape errors come as many types
        pnames = {p: n for n, p in model.named_parameters()}  # Torch-Pruning also couples bare Parameters
        coupled = sorted({names.get(dep.target.module) or pnames.get(dep.target.module, "") for dep, _ in group} - {root, ""})
        raise CompatibilityError(
            f"removing channels of layer {root} (coupled with {len(coupled)} layers: {', '.join(coupled[:5])}"
            f"{', ...' if len(coupled) > 5 else ''}) breaks the model's forward ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}): its code relies on that width. Keep this group whole with "
            f"targets={{{root!r}: None}}; the other groups are still pruned"
        ) from exc


def _all_groups(dg: Any, model: nn.Module, ignored: list[nn.Module], names: dict[nn.Module, str],
                skipped: dict[str, str]) -> Any:  # fmt: skip
    """Torch-Pruning's ``get_all_groups``, one root at a time: a group its dependency graph cannot
    follow (a GRU's gates, say, raise IndexError inside Torch-Pruning) is kept whole and reported in
    ``skipped`` instead of failing the whole model."""
    visited: set[nn.Module] = set()
    ignored = list(ignored) + list(dg.IGNORED_LAYERS_IN_TRACING)
    limit = _index_limit(model)
    for m in list(dg.module2node):
        if m in ignored or not isinstance(m, ROOT_TYPES) or m in visited:
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        try:
            with _bounded_index_mapping(limit):
                group = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        except _RunawayIndices as exc:
            skipped[names.get(m, str(m))] = (f"Torch-Pruning cannot follow its channels: its index mapping grows without end "
                                             f"through reshapes it does not model ({exc}; e.g. window attention); kept whole")  # fmt: skip
            visited.add(m)
            continue
        except Exception as exc:  # Torch-Pruning's index mapping fails on couplings it does not model
            kinds = sorted({type(x).__name__ for x in model.modules() if isinstance(x, (nn.RNNBase,))})
            through = f" through {', '.join(kinds)}" if kinds else ""
            skipped[names.get(m, str(m))] = (f"Torch-Pruning cannot follow its channels{through} "
                                             f"({type(exc).__name__}); kept whole")  # fmt: skip
            visited.add(m)
            continue
        prunable = True
        for dep, _ in group:
            if dg.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                if dep.target.module in ignored:
                    prunable = False
        if prunable:
            yield group


# ----------------------------------------------------------------------------- what a model allows
TRIAL_RATIO = 0.5  # the share of each group's channels the trial of channel_groups removes at most


@dataclass
class ChannelGroup:
    """One coupled channel group: the layers that lose output channels with ``root``'s and those
    that lose input channels, and what removing channels from it did in the trial."""

    root: str
    outputs: list[str]
    inputs: list[str]
    channels: int
    slices: int = 1  # equal slices that each lose the same positions (grouped conv, heads)
    removed: int = 0  # channels of the root the estimate removed (0: none)
    reason: str | None = None  # why no channel of the group can go (None: the group prunes)
    width_note: str | None = None  # the group prunes, but only to some widths: which trial broke the forward

    @property
    def members(self) -> list[str]:
        return [*self.outputs, *(n for n in self.inputs if n not in self.outputs)]


@dataclass
class ChannelGroups:
    """Every channel group of a model (see :func:`channel_groups`), or why there are none."""

    groups: list[ChannelGroup] = field(default_factory=list)
    kept_whole: dict[str, str] = field(default_factory=dict)  # root layer -> why Torch-Pruning cannot follow its group
    output_layers: list[str] = field(default_factory=list)
    error: str | None = None  # the model could not be traced: no group at all
    max_ratio: float = TRIAL_RATIO
    macs_before: int | None = None
    macs_after: int | None = None
    params_before: int = 0
    params_after: int = 0

    def group_of(self, name: str) -> ChannelGroup | None:
        """The group that removes ``name``'s output channels, else the first that removes its inputs."""
        for g in self.groups:
            if name in g.outputs:
                return g
        return next((g for g in self.groups if name in g.inputs), None)


def channel_groups(model: nn.Module, example: ModelInput, max_ratio: float = TRIAL_RATIO) -> ChannelGroups:
    """Every coupled channel group of ``model``, each tried on a copy; ``model`` is not modified.

    The groups are those :func:`prune_structured` prunes (Torch-Pruning's dependency graph traced
    on ``example``; layers producing the model output never lose output channels). Each group is
    tried as :class:`StructuredConfig` prunes it (the channels of lowest L1 importance, the same
    positions in every slice), twice, with the model run after each group: removing ``max_ratio``
    of its channels (one per slice where that would empty a coupled layer), and removing one.
    A group whose removals both break the forward (code relying on the width) cannot be pruned;
    one where only one of them does prunes to some widths only (``width_note``). ``macs_after`` /
    ``params_after`` are the copy's after the first trial, every group that allows it pruned.

    >>> import torch
    >>> from torchslim.data.protocol import ModelInput
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> cg = channel_groups(m, ModelInput((torch.randn(1, 3, 8, 8),)))
    >>> [(g.root, g.members, g.removed) for g in cg.groups], cg.output_layers
    ([('0', ['0', '1', '3'], 4)], ['3'])
    """
    import warnings

    tp = require("torch_pruning", "prune")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about every bare parameter it meets
        return _GroupTrial(tp, model, example, max_ratio).run()


class _GroupTrial:
    def __init__(self, tp: Any, model: nn.Module, example: ModelInput, max_ratio: float) -> None:
        self.tp, self.model, self.example, self.max_ratio = tp, model, example, max_ratio

    def _fresh(self) -> tuple[nn.Module, Any, dict[nn.Module, str]]:
        work = copy_model(self.model).eval()
        for prm in work.parameters():  # Torch-Pruning follows autograd: frozen parameters would hide layers
            prm.requires_grad_(True)
        return work, _build_graph(self.tp, work, self.example), {m: n for n, m in work.named_modules()}

    def run(self) -> ChannelGroups:
        prof = profile(self.model, self.example)
        res = ChannelGroups(output_layers=prof.output_layers, max_ratio=self.max_ratio, macs_before=prof.macs,
                            params_before=sum(p.numel() for p in self.model.parameters()))  # fmt: skip
        try:
            work, dg, names = self._fresh()
        except CompatibilityError as exc:
            cause = exc.__cause__ or exc
            res.error = (f"Torch-Pruning could not trace {type(self.model).__name__} to find its channel groups "
                         f"({type(cause).__name__}: {one_line(cause, 200)})")  # fmt: skip
            return res
        ignored = [m for n, m in work.named_modules() if n in res.output_layers]
        importance = _importance(self.tp, "l1")
        limit = _index_limit(work)
        plans: list[tuple[ChannelGroup, list[int], list[int]]] = []
        for group in _all_groups(dg, work, ignored, names, res.kept_whole):
            root_m, handler = group[0].dep.target.module, group[0].dep.handler
            outs, ins = _group_members(dg, group, names)
            g = ChannelGroup(names.get(root_m, str(root_m)), outs, ins, dg.get_out_channels(root_m))
            res.groups.append(g)
            try:
                g.slices = _channel_groups(group, names, g.root, g.channels)
                planned = self._plan(dg, group, root_m, handler, g, importance, names, limit)
            except CompatibilityError as exc:
                g.reason = one_line(exc, 300)
                continue
            except Exception as exc:  # noqa: BLE001 - Torch-Pruning's own failures on couplings it does not model
                g.reason = f"Torch-Pruning cannot follow the channels of {g.root}'s group ({type(exc).__name__}: {one_line(exc, 160)})"
                continue
            if planned is not None:
                plans.append((g, *planned))
        res.kept_whole = {n: one_line(why, 300) for n, why in res.kept_whole.items()}
        widest, broke_wide = self._trial([(g, wide) for g, wide, _ in plans], (work, dg))
        narrow = [(g, one) for g, wide, one in plans if len(one) < len(wide)]
        broke_one = self._trial(narrow)[1] if narrow else {}
        for g, wide, one in plans:
            wide_err = broke_wide.get(g.root)
            one_err = broke_one.get(g.root) if len(one) < len(wide) else wide_err
            if wide_err is None:
                g.removed = len(wide)
                if one_err is not None:
                    g.width_note = f"removing a single channel {one_err}: only some widths work (StructuredConfig round_to)"
            elif one_err is None:
                g.width_note = f"removing {len(wide)} of {g.channels} channels {wide_err}; removing {len(one)} works"
            else:
                relies = ": its code relies on that width" if wide_err.startswith("breaks") else ""
                g.reason = f"removing channels of {g.root}'s group {wide_err}{relies}"
        if widest is not None:
            after = profile(widest, self.example)
            res.macs_after, res.params_after = after.macs, sum(p.numel() for p in widest.parameters())
        return res

    def _plan(self, dg: Any, group: Any, root_m: nn.Module, handler: Any, g: ChannelGroup, importance: Any,
              names: dict[nn.Module, str], limit: int) -> tuple[list[int], list[int]] | None:  # fmt: skip
        """The channels the trials remove from ``g`` (the most, and one per slice; every slice the
        same positions), or ``None`` with ``g.reason`` set when none can go."""
        per = g.channels // g.slices
        if per < 2:
            g.reason = f"{g.root} has {g.channels} channels in {g.slices} slice(s): removing one would empty a slice"
            return None
        score = importance(group)
        if score is None or score.numel() != g.channels:
            raise CompatibilityError(f"layer {g.root}: Torch-Pruning's importance does not cover its {g.channels} channels; this coupling is unsupported")
        order = torch.argsort(score.detach().float().cpu().view(g.slices, -1).mean(0)).tolist()

        def idxs(n: int) -> list[int]:
            return [i + s * per for s in range(g.slices) for i in order[:n]]

        # The most channels, else one per slice: Torch-Pruning's group walk is slow on some models
        # (seconds per call on Swin), so the estimate does not search the widths in between.
        for n in dict.fromkeys((max(1, int(self.max_ratio * per)), 1)):
            with _bounded_index_mapping(limit):
                member = _emptied_member(dg, dg.get_pruning_group(root_m, handler, idxs(n)), names)
            if member is None:
                return idxs(n), idxs(1)
        g.reason = f"removing any channel of {g.root} would remove {member} (Torch-Pruning maps its channels onto fewer ones)"
        return None

    def _trial(self, plans: list[tuple[ChannelGroup, list[int]]], start: tuple[nn.Module, Any] | None = None
               ) -> tuple[nn.Module | None, dict[str, str]]:  # fmt: skip
        """Remove each group's channels from one copy in turn, running the model after each;
        returns the copy (``None`` if it was lost) and ``{root: the error}`` for groups that broke it."""
        work, dg = start if start is not None else self._fresh()[:2]
        done: list[tuple[ChannelGroup, list[int]]] = []
        broke: dict[str, str] = {}
        with torch.no_grad():
            want = _output_shapes(self.example(work))
        for k, (g, idxs) in enumerate(plans):
            step = "fails inside Torch-Pruning"
            try:
                with torch.no_grad():
                    self._prune(dg, work, g.root, idxs)
                    step = "breaks the model's forward"
                    got = _output_shapes(self.example(work))
                if got != want:  # a layer whose output reaches the model's through an op (tanh, softmax)
                    raise _OutputChanged(f"changes the model's output shapes from {want} to {got}")
            except Exception as exc:  # noqa: BLE001 - the model's code may rely on the width: any error, named
                broke[g.root] = str(exc) if isinstance(exc, _OutputChanged) else f"{step} ({type(exc).__name__}: {one_line(exc, 160)})"
                try:  # the half-pruned copy is lost: a fresh one, with the groups that worked removed again
                    work, dg, _ = self._fresh()
                    for d, d_idxs in done:
                        self._prune(dg, work, d.root, d_idxs)
                except Exception as again:  # noqa: BLE001 - never expected; the untried groups say so
                    for rest, _ in plans[k + 1 :]:
                        broke[rest.root] = f"not tried: rebuilding the trial copy failed ({type(again).__name__}: {one_line(again, 120)})"
                    return None, broke
                continue
            done.append((g, idxs))
        return work, broke

    @staticmethod
    def _prune(dg: Any, work: nn.Module, root: str, idxs: list[int]) -> None:
        m = work.get_submodule(root)
        dg.get_pruning_group(m, dg.get_pruner_of_module(m).prune_out_channels, idxs).prune()


class _OutputChanged(Exception):
    pass


def _output_shapes(out: Any) -> list[list[int]]:
    """The shapes of the tensors a model returns (a tensor, a tuple, a dict or a ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return [list(out.shape)]
    if isinstance(out, dict) or (hasattr(out, "values") and callable(out.values)):
        out = list(out.values())
    if isinstance(out, tuple | list):
        return [s for v in out for s in _output_shapes(v)]
    return []
