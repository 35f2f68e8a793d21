"""docs/recipe-steps.md is generated from the registries: it must list every step, and be current."""

from pathlib import Path

import torchslim.recipes.steps  # noqa: F401  (the recipe-only steps)
from torchslim.recipes.registry import get_step, step_types, steps_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipe-steps.md"


def test_committed_step_reference_is_current():
    assert DOC.read_text() == steps_markdown(), "docs/recipe-steps.md is stale: run `make docs`"


def test_every_step_and_field_is_documented():
    text = steps_markdown()
    for name in step_types():
        if get_step(name).config_cls.__module__.startswith("torchslim."):  # not the tests' own steps
            assert f"### {name}\n" in text
    assert "| `smoothquant_alpha` | `float \\| None` | `0.5` | migration strength; None: no smoothing |" in text
    assert "config: `GPTQConfig`; verb: `quantize()`; needs: calibration" in text
