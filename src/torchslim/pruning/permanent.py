"""Make pruning permanent: fold each mask into its weight and drop the reparametrization."""

from __future__ import annotations

import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from torchslim.pruning._common import copy_model


def pruned_parameters(model: nn.Module) -> list[tuple[str, str]]:
    """``(module name, parameter name)`` of every tensor under ``torch.nn.utils.prune`` masks."""
    out = []
    for name, m in model.named_modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                out.append((name, hook._tensor_name))
    return out


def make_permanent(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace ``weight_orig``/``weight_mask`` by a plain ``weight`` holding the zeros.

    The result has the state-dict keys of the unpruned architecture, so torchslim's checkpoint
    rebuilds it from the registry and stores each sparse tensor as a bitmask plus its non-zeros.

    >>> import torch.nn as nn
    >>> from torchslim.pruning import MagnitudeConfig, prune
    >>> m, _ = prune(nn.Sequential(nn.Linear(8, 8)), MagnitudeConfig(amount=0.5))
    >>> sorted(make_permanent(m).state_dict())
    ['0.bias', '0.weight']
    """
    if not inplace:
        model = copy_model(model)
    from torchslim.pruning.unstructured import DetachAfterForward

    for name, pname in pruned_parameters(model):
        m = model.get_submodule(name)
        torch_prune.remove(m, pname)
        for k, hook in list(m._forward_hooks.items()):
            if isinstance(hook, DetachAfterForward) and hook.name == pname:
                del m._forward_hooks[k]
    return model
