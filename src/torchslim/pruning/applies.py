"""Which layers each pruning method can take, and why not.

The predicates the method registry carries (``register_method(..., applies=..., applies_detail=...)``
in this package's ``__init__``), built on the methods' own checks: the layer types unstructured
pruning masks (``PRUNABLE``), N:M's input-channel rule (:func:`~torchslim.pruning.unstructured.nm_unfit`)
and structured pruning's channel groups (:func:`~torchslim.pruning.structured.channel_groups`,
Torch-Pruning's dependency graph, tried on a copy). ``torchslim.inspect`` asks them about every layer.

>>> import torch.nn as nn
>>> m = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.LayerNorm(4))
>>> nm(m, "0", m[0], None)
'Conv2d: 1 input channels are not a multiple of m=4 (N:M groups run along the input channels of each output)'
>>> magnitude(m, "1", m[1], None)
'LayerNorm is not a Linear or convolution: unstructured pruning masks the weights of Linear/Conv1d/Conv2d/Conv3d only'
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from torchslim.methods import layer_label, model_fact, one_line
from torchslim.pruning._common import PRUNABLE, effective
from torchslim.surgery import weight_read_by_parent


def _weight_reason(module: nn.Module) -> str | None:
    t = layer_label(module)
    if not isinstance(module, PRUNABLE):
        kinds = "/".join(k.__name__ for k in PRUNABLE)
        return f"{t} is not a Linear or convolution: unstructured pruning masks the weights of {kinds} only"
    from torchslim.pruning.config import MagnitudeConfig

    param = MagnitudeConfig.model_fields["parameter"].default
    own = [n.removesuffix("_orig") for n, _ in module.named_parameters(recurse=False)]
    if param not in own:
        return f"{t} has no {param!r} parameter to mask (its parameters are {own})"
    return None


# ----------------------------------------------------------------------------- unstructured
def magnitude(model: nn.Module, name: str, module: nn.Module, example: Any) -> str | None:
    """Why :class:`MagnitudeConfig` cannot take ``module`` (``None``: it can)."""
    return _weight_reason(module)


def magnitude_detail(model: nn.Module, name: str, module: nn.Module, example: Any) -> str:
    return ("masks any share of its weights (torch.nn.utils.prune): a smaller compressed checkpoint; "
            "dense kernels, so no speed-up")  # fmt: skip


# ----------------------------------------------------------------------------- N:M
def _nm_config() -> Any:
    from torchslim.pruning.config import NMConfig

    return NMConfig()


def nm(model: nn.Module, name: str, module: nn.Module, example: Any) -> str | None:
    """Why :class:`NMConfig` (2:4) cannot take ``module`` (``None``: it can)."""
    from torchslim.pruning.unstructured import nm_unfit

    why = _weight_reason(module)
    if why is not None:
        return why
    unfit = nm_unfit(effective(module, "weight"), _nm_config().m)
    if unfit is not None:
        return f"{type(module).__name__}: {unfit} (N:M groups run along the input channels of each output)"
    return None


def nm_detail(model: nn.Module, name: str, module: nn.Module, example: Any) -> str:
    c = _nm_config()
    return (f"{c.n}:{c.m} masks along its input channels: dense kernels on CPU; the speed-up needs {c.n}:{c.m} sparse "
            "kernels (NVIDIA sparse tensor cores)")  # fmt: skip


# ----------------------------------------------------------------------------- structured
NO_EXAMPLE = "no example input: pass data"


def groups(model: nn.Module, example: Any) -> Any:
    """:func:`~torchslim.pruning.structured.channel_groups` of ``model`` on ``example`` (computed
    once per model and example inside :func:`torchslim.methods.shared_facts`)."""
    return model_fact(model, ("channel_groups", id(example)), lambda: (example, _analyze(model, example)))[1]


def _analyze(model: nn.Module, example: Any) -> Any:
    from torchslim.pruning.structured import ChannelGroups, channel_groups

    try:
        return channel_groups(model, example)
    except Exception as exc:  # noqa: BLE001 - decided once, reported on every layer (Torch-Pruning missing, say)
        return ChannelGroups(error=f"finding the channel groups failed ({type(exc).__name__}: {one_line(exc, 200)})")


def group_of(model: nn.Module, name: str, module: nn.Module, example: Any) -> Any:
    """The channel group holding layer ``name`` (or a bare parameter of its own, such as a
    ``class_token``), as :meth:`ChannelGroups.group_of` finds it; ``None`` outside every group."""
    cg = groups(model, example)
    for n in [name, *(f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False))]:
        g = cg.group_of(n)
        if g is not None:
            return g
    return None


def _removes_outputs(g: Any, name: str, module: nn.Module) -> bool:
    own = {name, *(f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False))}
    return bool(own & set(g.outputs))


def structured(model: nn.Module, name: str, module: nn.Module, example: Any) -> str | None:
    """Why :class:`StructuredConfig` cannot remove ``module``'s output channels (``None``: it can)."""
    t = type(module).__name__
    if example is None:
        return f"{NO_EXAMPLE} (structured pruning traces the model on one sample to find the channel group of this {t})"
    cg = groups(model, example)
    label = layer_label(module, name)
    if cg.error is not None:
        return f"{label}: {cg.error}"
    if name in cg.output_layers:
        return f"{label} produces the model output: its output channels are fixed"
    if name in cg.kept_whole:
        return f"{label}: {cg.kept_whole[name]}"
    g = group_of(model, name, module, example)
    if g is None:
        kept = model_fact(model, "weight_read_by_parent", lambda: weight_read_by_parent(model))

        def parent_group(p: str) -> Any:
            return group_of(model, p, model.get_submodule(p), example)

        parent = name.rpartition(".")[0] if name in kept else next((p for p in _ancestors(name) if parent_group(p)), None)
        if parent is not None:
            pg = parent_group(parent)
            where = f"in {pg.root}'s group" if pg is not None else "in no channel group"
            return (f"{label} is not a layer of its own to Torch-Pruning: its channels go with its parent "
                    f"{type(model.get_submodule(parent)).__name__} {parent or '(model)'} ({where})")  # fmt: skip
        hits = [(root, why) for root, why in cg.kept_whole.items() if t in why]
        if hits:
            return f"{label} is in no channel group Torch-Pruning can follow (following {hits[0][0]}: {hits[0][1]})"
        return (f"{label} is in no channel group: Torch-Pruning found no Conv/Linear whose output channels "
                "reach it (only those start a group)")  # fmt: skip
    if not _removes_outputs(g, name, module):
        return f"{label} only loses input channels (with {g.root}'s group); no group removes its output channels"
    if g.reason is not None:
        coupled = f" is coupled with {len(g.members) - 1} other layer(s) in {g.root}'s group" if len(g.members) > 1 else ""
        return f"{label}{coupled}: {one_line(g.reason, 300)}"
    return None


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def structured_detail(model: nn.Module, name: str, module: nn.Module, example: Any) -> str:
    g = group_of(model, name, module, example)
    slices = f" in {g.slices} equal slices" if g.slices > 1 else ""
    trial = f"the estimate removes {g.removed} of {g.channels}{slices}" if g.removed else f"{g.channels} channels{slices}"
    note = f"; {g.width_note}" if g.width_note else ""
    return (f"channel group of {g.root}: {len(g.outputs)} layer(s) lose output channels, {len(g.inputs)} lose inputs; "
            f"{trial}{note}")  # fmt: skip
