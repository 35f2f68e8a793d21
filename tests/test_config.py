"""StrictConfig turns pydantic's errors into one-line ConfigErrors that say what to fix."""

import pytest

from torchslim.errors import ConfigError
from torchslim.pruning import MagnitudeConfig, StructuredConfig


def test_a_missing_required_field_says_how_to_set_it():
    with pytest.raises(ConfigError, match=r"^MagnitudeConfig: amount: required, and not given: set it \(amount=\.\.\. in Python, 'amount:' in a recipe step"):
        MagnitudeConfig()


def test_unknown_field_suggests_the_closest_and_bad_value_shows_what_was_given():
    with pytest.raises(ConfigError, match=r"ratoi: unknown field; .*Did you mean: ratio\?"):
        StructuredConfig(ratoi=0.3)
    with pytest.raises(ConfigError, match=r"ratio: Input should be less than 1 \(got 1.5\)"):
        StructuredConfig(ratio=1.5)
