"""Issue 19: recipes that are too big, too deep or not text-keyed are ConfigErrors, never raw exceptions."""

import pytest

from torchslim.errors import ConfigError
from torchslim.recipes import load_recipe


def test_an_integer_of_100000_digits_is_a_config_error():
    with pytest.raises(ConfigError, match=r"holds a value that cannot be read .*integer string conversion"):
        load_recipe("latency_runs: " + "9" * 100_000 + "\nsteps: [{type: evaluate}]\n")


def test_python_data_with_a_non_text_key_is_a_config_error():
    with pytest.raises(ConfigError, match=r"recipe keys are field names \(text\), not 1"):
        load_recipe({1: 2, "steps": [{"type": "evaluate"}]})


def test_more_than_1000_steps_is_refused():
    with pytest.raises(ConfigError, match=r"1,001 steps; a recipe holds at most 1,000"):
        load_recipe([{"type": "evaluate"}] * 1001)
    assert len(load_recipe([{"type": "evaluate"}] * 3).steps) == 3


@pytest.mark.parametrize(("text", "field"), [
    ("calibration_samples: 100000000000000\nsteps: [{type: evaluate}]\n", "calibration_samples"),
    ("steps: [{type: finetune, epochs: 1000000000000}]\n", "epochs"),
    ("steps: [{type: finetune, lr: .inf}]\n", "lr"),
    ("steps: [{type: finetune, lr: .nan}]\n", "lr"),
    ("steps: [{type: finetune, batch_size: 100000000000}]\n", "batch_size"),
    ("steps: [{type: finetune, seed: 100000000000000000000}]\n", "seed"),
    ("steps: [{type: magnitude, amount: .nan}]\n", "amount"),
])  # fmt: skip
def test_numbers_out_of_range_name_the_field(text: str, field: str):
    with pytest.raises(ConfigError, match=rf"<recipe>:\d+:\d+: .*field '{field}'"):
        load_recipe(text)


def test_control_characters_are_named_with_the_fix():
    with pytest.raises(ConfigError, match=r"unacceptable character #x001b.*remove control characters") as exc:
        load_recipe("name: a\x1b\nsteps: [{type: evaluate}]\n")
    assert "\n" not in str(exc.value)
