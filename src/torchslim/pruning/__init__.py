"""Pruning: unstructured (layer-wise, global, random, Wanda, Taylor), N:M, structured channels,
gradual and iterative schedules, and making masks permanent.

>>> from torchslim.models import create_model
>>> from torchslim.pruning import NMConfig, prune
>>> m, report = prune(create_model("lenet300"), NMConfig(n=2, m=4))
>>> report.summary["targeted_sparsity_after"]
0.5
"""

from torchslim.pruning import codecs as _codecs  # noqa: F401  (registers checkpoint codecs)
from torchslim.pruning.api import prune
from torchslim.pruning.compat import global_unstructured
from torchslim.pruning.config import (
    CONFIGS,
    GradualConfig,
    IterativeConfig,
    MagnitudeConfig,
    NMConfig,
    RandomConfig,
    StructuredConfig,
    TaylorConfig,
    WandaConfig,
    config_from_dict,
)
from torchslim.pruning.config import (
    PruneConfig as PruneConfig,  # base class: importable, not a recipe step
)
from torchslim.pruning.permanent import make_permanent, pruned_parameters
from torchslim.pruning.schedule import (
    GradualPruning,
    KeepSparsity,
    cubic_sparsity,
    prune_gradual,
    prune_iterative,
)
from torchslim.pruning.unstructured import nm_mask

__all__ = [
    "CONFIGS", "GradualConfig", "GradualPruning", "IterativeConfig", "KeepSparsity", "MagnitudeConfig", "NMConfig",
    "RandomConfig", "StructuredConfig", "TaylorConfig", "WandaConfig", "config_from_dict",
    "cubic_sparsity", "global_unstructured", "make_permanent", "nm_mask", "prune", "prune_gradual", "prune_iterative",
    "pruned_parameters",
]  # fmt: skip
