"""The seed article's call, ``prune.global_unstructured(...)``, through torchslim.

Same signature and the same result as ``torch.nn.utils.prune.global_unstructured`` (it calls it),
plus torchslim's checks first and a per-layer report back. Like the torch function, it prunes the
given modules in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from torchslim.errors import ConfigError, UnknownNameError, suggest
from torchslim.layer_report import Report
from torchslim.pruning._common import check_not_quantized, tensor_sparsity


def global_unstructured(
    parameters: Iterable[tuple[nn.Module, str]],
    pruning_method: type[torch_prune.BasePruningMethod] = torch_prune.L1Unstructured,
    importance_scores: dict[tuple[nn.Module, str], torch.Tensor] | None = None,
    *,
    model: nn.Module | None = None,
    **kwargs: Any,
) -> Report:
    """``torch.nn.utils.prune.global_unstructured`` with validation and a report.

    ``model`` (optional) names the layers in the report.

    >>> import torch.nn as nn
    >>> from torch.nn.utils import prune
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    >>> r = global_unstructured([(net[0], "weight"), (net[1], "weight")], pruning_method=prune.L1Unstructured, amount=0.25)
    >>> int((net[0].weight == 0).sum() + (net[1].weight == 0).sum())
    8
    """
    params = list(parameters)
    if not params:
        raise ConfigError("global_unstructured: parameters is empty; pass [(module, 'weight'), ...]")
    for i, item in enumerate(params):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module) and isinstance(item[1], str)):
            raise ConfigError(f"global_unstructured: parameters[{i}] must be a (module, parameter name) tuple, got {item!r}")
        module, name = item
        check_not_quantized(module)
        own = [n.removesuffix("_orig") for n, _ in module.named_parameters(recurse=False)]
        if name not in own:
            raise UnknownNameError(
                f"parameters[{i}]: {type(module).__name__} has no parameter {name!r}; it has {own}.{suggest(name, own)}"
            )
    if not (isinstance(pruning_method, type) and issubclass(pruning_method, torch_prune.BasePruningMethod)):
        raise ConfigError(f"pruning_method must be a torch.nn.utils.prune method class such as prune.L1Unstructured, got {pruning_method!r}")
    amount = kwargs.get("amount")
    total = sum(getattr(m, n).numel() for m, n in params)
    if amount is not None:
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise ConfigError(f"amount must be a float in [0, 1) or an integer count, got {amount!r}")
        if isinstance(amount, float) and not 0.0 <= amount < 1.0:
            raise ConfigError(f"amount={amount} is outside [0, 1); it is the fraction of weights to remove")
        if isinstance(amount, int) and not 0 <= amount <= total:
            raise ConfigError(f"amount={amount} weights is not in [0, {total}], the number of weights given")
    try:
        # Dry run on the same random stream, so an all-zero layer is caught before any change.
        with torch.random.fork_rng():
            scores = torch.nn.utils.parameters_to_vector(
                [(importance_scores or {}).get((m, n), getattr(m, n)) for m, n in params]
            )
            default = torch.nn.utils.parameters_to_vector(
                [getattr(m, n + "_mask", torch.ones_like(getattr(m, n))) for m, n in params]
            )
            container = torch_prune.PruningContainer()
            container._tensor_name = "temp"
            method = pruning_method(**kwargs)
            method._tensor_name = "temp"
            if method.PRUNING_TYPE != "unstructured":
                raise ConfigError(f"global_unstructured needs an unstructured method, got {pruning_method.__name__}")
            container.add_pruning_method(method)
            mask = container.compute_mask(scores, default)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"global_unstructured: {exc}") from exc
    i = 0
    before = []
    for m, n in params:
        k = getattr(m, n).numel()
        if mask[i : i + k].sum() == 0:
            raise ConfigError(f"pruning would remove every weight of {type(m).__name__}.{n} ({k} weights); lower amount")
        i += k
        before.append(tensor_sparsity(getattr(m, n).detach()))
    torch_prune.global_unstructured(params, pruning_method=pruning_method, importance_scores=importance_scores, **kwargs)
    report = Report("prune", f"global_unstructured/{pruning_method.__name__}")
    names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
    for j, ((m, n), sb) in enumerate(zip(params, before, strict=True)):
        w = getattr(m, n).detach()
        report.add(f"{names.get(id(m), f'parameters[{j}]')}.{n}", type(m).__name__, "pruned", str(kwargs),
                   before={"sparsity": sb, "params": w.numel()}, after={"sparsity": tensor_sparsity(w), "params": w.numel()})  # fmt: skip
    report.summary = {"sparsity_after": sum(float((getattr(m, n) == 0).sum()) for m, n in params) / total}
    return report
