import pytest

from torchslim.errors import ConfigError
from torchslim.recipes import get_step, load_recipe, step_types


def test_every_verb_method_is_a_step_type():
    types = set(step_types())
    assert {"deep_compression", "weight_sharing", "huffman_coding", "finetune", "evaluate"} <= types
    # torchslim.quantization and torchslim.pruning methods, under their config's `method` name.
    assert {"int8_static", "int8_dynamic", "weight_only", "qat", "fp16"} <= types
    assert {"magnitude", "structured", "nm", "gradual", "iterative", "wanda"} <= types
    from torchslim.pruning import StructuredConfig
    from torchslim.quantization.config import StaticInt8Config

    assert get_step("int8_static").config_cls is StaticInt8Config
    assert get_step("structured").config_cls is StructuredConfig


def test_structured_pruning_after_int8_conversion_is_refused():
    text = "steps:\n  - type: int8_static\n  - type: structured\n    ratio: 0.3\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    assert str(e.value).startswith("<recipe>:3:5: step 2 (structured) cannot follow step 1 (int8_static)")
    assert "move it before step 1" in str(e.value)
    ok = load_recipe("steps:\n  - type: structured\n    ratio: 0.3\n  - type: int8_static\n")
    assert [s.type for s in ok.steps] == ["structured", "int8_static"]


def test_finetune_after_int8_and_weight_sharing_after_int8_are_refused():
    with pytest.raises(ConfigError, match="cannot be trained"):
        load_recipe([{"type": "int8_dynamic"}, {"type": "finetune"}])
    with pytest.raises(ConfigError, match="already integers"):
        load_recipe([{"type": "int8_static"}, {"type": "weight_sharing"}])


def test_other_packages_config_errors_keep_the_step_position():
    text = "steps:\n  - type: nm\n    n: 4\n    m: 4\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    assert str(e.value).startswith("<recipe>:")
    assert "step 1 (nm)" in str(e.value) and "smaller than m" in str(e.value)


def test_targets_are_accepted_by_verbs_that_take_them():
    r = load_recipe([{"type": "int8_static", "targets": {"fc2": None}}])
    assert r.steps[0].targets == {"fc2": None}
    with pytest.raises(ConfigError, match="takes no 'targets'"):
        load_recipe([{"type": "finetune", "targets": {"fc2": None}}])
