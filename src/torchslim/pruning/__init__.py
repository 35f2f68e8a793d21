"""Pruning: unstructured (layer-wise, global, random, Wanda, Taylor), N:M, structured channels,
gradual and iterative schedules, and making masks permanent.

>>> from torchslim.models import create_model
>>> from torchslim.pruning import NMConfig, prune
>>> m, report = prune(create_model("lenet300"), NMConfig(n=2, m=4))
>>> report.summary["targeted_sparsity_after"]
0.5
"""

from typing import Any

from torchslim.methods import (
    CALIBRATION,
    ON_FLOAT_WEIGHTS,
    SPARSE,
    STRUCTURED,
    TRAINING,
    register_method,
)
from torchslim.pruning import api as _api
from torchslim.pruning import applies as _applies
from torchslim.pruning.api import prune
from torchslim.pruning.codecs import _register as _register_codecs
from torchslim.pruning.compat import global_unstructured
from torchslim.pruning.config import (
    GradualConfig,
    HeadPruningConfig,
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
from torchslim.pruning.heads import prune_heads_and_neurons
from torchslim.pruning.permanent import make_permanent, pruned_parameters
from torchslim.pruning.schedule import (
    GradualPruning,
    KeepSparsity,
    cubic_sparsity,
    prune_gradual,
    prune_iterative,
)
from torchslim.pruning.unstructured import nm_mask


# One entry per method: prune() dispatches on the config's type, recipes and the CLI use the name
# (the config's ``method``). The codecs rebuild layers structured pruning reshapes (LSTM, Conv1d...).
# ``applies`` says which layers a method can take and why not (torchslim.inspect reads it; see
# pruning/applies.py).
def _register(cls: type, handler: Any, produces: str, **kw: Any) -> None:
    register_method(cls, verb="prune", handler=handler, produces={produces}, forbidden_after=ON_FLOAT_WEIGHTS,
                    codecs=_register_codecs, **kw)  # fmt: skip


_register(MagnitudeConfig, _api.unstructured_method, SPARSE,
          applies=_applies.magnitude, applies_detail=_applies.magnitude_detail)  # fmt: skip
_register(RandomConfig, _api.unstructured_method, SPARSE)
_register(WandaConfig, _api.unstructured_method, SPARSE, needs={CALIBRATION})
_register(TaylorConfig, _api.unstructured_method, SPARSE, needs={CALIBRATION})
_register(NMConfig, _api.unstructured_method, SPARSE, applies=_applies.nm, applies_detail=_applies.nm_detail)
_register(StructuredConfig, _api.structured_method, STRUCTURED,
          applies=_applies.structured, applies_detail=_applies.structured_detail)  # fmt: skip
_register(GradualConfig, _api.gradual_method, SPARSE, needs={TRAINING})
_register(IterativeConfig, _api.iterative_method, SPARSE, needs={TRAINING})
_register(HeadPruningConfig, _api.heads_method, STRUCTURED, needs={CALIBRATION}, accepts_targets=False)

__all__ = [
    "GradualConfig", "GradualPruning", "HeadPruningConfig", "IterativeConfig", "KeepSparsity", "MagnitudeConfig", "NMConfig",
    "RandomConfig", "StructuredConfig", "TaylorConfig", "WandaConfig", "config_from_dict",
    "cubic_sparsity", "global_unstructured", "make_permanent", "nm_mask", "prune", "prune_gradual", "prune_iterative",
    "prune_heads_and_neurons", "pruned_parameters",
]  # fmt: skip
