"""Issue 19: training numbers are bounded and finite; a typo is a ConfigError naming the field."""

import pytest

from torchslim.errors import ConfigError
from torchslim.recovery import FinetuneConfig
from torchslim.training import DistillConfig, TrainConfig


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 10**12, "less than or equal to 100000"),
    ("batch_size", 10**12, "less than or equal to 1048576"),
    ("seed", 10**20, "less than or equal to 9223372036854775807"),
    ("seed", -1, "greater than or equal to 0"),
    ("lr", float("nan"), "finite number"),
    ("lr", float("inf"), "finite number"),
    ("weight_decay", float("nan"), "finite number"),
    ("max_steps", 10**12, "less than or equal to 1000000000"),
    ("checkpoint_every_steps", 10**12, "less than or equal to 1000000000"),
])  # fmt: skip
def test_train_config_refuses(field: str, value: object, message: str):
    with pytest.raises(ConfigError, match=rf"TrainConfig: {field}: .*{message}"):
        TrainConfig(**{field: value})


def test_finetune_and_distill_configs_refuse_too():
    with pytest.raises(ConfigError, match=r"FinetuneConfig: epochs: .*less than or equal to 100000"):
        FinetuneConfig(epochs=10**12)
    with pytest.raises(ConfigError, match=r"DistillConfig: temperature: .*finite number"):
        DistillConfig(temperature=float("inf"))
    assert TrainConfig(seed=2**63 - 1, epochs=100_000).seed == 2**63 - 1
