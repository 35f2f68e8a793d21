"""YAML recipes: one command (``torchslim compress``) chains pruning, quantization, fine-tuning,
Deep Compression, evaluation and export, validated before any work starts.

>>> from torchslim.recipes import load_recipe
>>> load_recipe([{"type": "weight_sharing", "bits": 4}]).steps[0].config.bits
4
"""

from torchslim.recipes.context import StepContext
from torchslim.recipes.recipe import (
    Recipe,
    RecipeSettings,
    RecipeStep,
    apply_overrides,
    load_recipe,
)
from torchslim.recipes.registry import StepType, get_step, register_step, step_types
from torchslim.recipes.run import CompressResult, compress

__all__ = [
    "CompressResult", "Recipe", "RecipeSettings", "RecipeStep", "StepContext", "StepType", "apply_overrides",
    "compress", "get_step", "load_recipe", "register_step", "step_types",
]  # fmt: skip
