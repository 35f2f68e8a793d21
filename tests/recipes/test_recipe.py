import pytest
from pydantic import BaseModel, ConfigDict

from torchslim.errors import ConfigError, UnknownNameError
from torchslim.recipes import apply_overrides, load_recipe, register_step
from torchslim.recipes.registry import QUANTIZED, STRUCTURED


def test_yaml_that_does_not_parse_names_line_and_column():
    text = "steps:\n  - type: finetune\n    epochs: [1, 2\n  - type: evaluate\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    msg = str(e.value)
    assert msg.startswith("<recipe>:4:")
    assert "not valid YAML" in msg


def test_yaml_file_error_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("steps:\n- type: finetune\n  epochs: 1\n - type: evaluate\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:4:2: recipe is not valid YAML"):
        load_recipe(p)


def test_unknown_step_type_suggests_close_names():
    text = "steps:\n  - type: deep_compresion\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    msg = str(e.value)
    assert msg.startswith("<recipe>:2:11: step 1:")
    assert "Did you mean: deep_compression" in msg
    with pytest.raises(ConfigError, match="Did you mean: finetune"):
        load_recipe([{"type": "fine_tune"}])


def test_unknown_field_points_at_its_line_and_suggests():
    text = "name: x\nsteps:\n  - type: finetune\n    epocs: 3\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    msg = str(e.value)
    assert msg.startswith("<recipe>:4:5: step 1 (finetune): unknown field 'epocs'")
    assert "Did you mean: epochs" in msg


def test_wrong_type_and_out_of_range_fields():
    text = "steps:\n  - type: weight_sharing\n    bits: 40\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    assert str(e.value).startswith("<recipe>:3:11: step 1 (weight_sharing): field 'bits'")
    assert "less than or equal to 12" in str(e.value) and "(got 40)" in str(e.value)
    text = "steps:\n  - type: deep_compression\n    prune:\n      keep: {fc1: 0.1}\n      train: {epochs: many}\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    assert str(e.value).startswith("<recipe>:5:")
    assert "field 'prune.train.epochs'" in str(e.value) and "integer" in str(e.value)
    with pytest.raises(ConfigError, match="keep"):
        load_recipe([{"type": "deep_compression", "prune": {"keep": {"fc1": 1.5}}}])


def test_recipe_level_fields_are_validated():
    with pytest.raises(ConfigError, match="unknown field 'datset'.*Did you mean: dataset"):
        load_recipe({"datset": "digits", "steps": [{"type": "evaluate"}]})
    with pytest.raises(ConfigError, match="non-empty list"):
        load_recipe({"steps": []})
    with pytest.raises(ConfigError, match="mapping with a 'type' key"):
        load_recipe(["finetune"])


class _Q(BaseModel):
    model_config = ConfigDict(extra="forbid")


def test_impossible_order_is_refused_before_any_work():
    register_step("test_int8", _Q, lambda m, c, ctx: (m, None), produces={QUANTIZED})
    register_step("test_structured", _Q, lambda m, c, ctx: (m, None), produces={STRUCTURED},
                  forbidden_after={QUANTIZED: "INT8 layers have no float channels to remove"})
    load_recipe([{"type": "test_structured"}, {"type": "test_int8"}])
    text = "steps:\n  - type: test_int8\n  - type: test_structured\n"
    with pytest.raises(ConfigError) as e:
        load_recipe(text)
    assert str(e.value) == (
        "<recipe>:3:5: step 2 (test_structured) cannot follow step 1 (test_int8): INT8 layers have no float "
        "channels to remove; move it before step 1"
    )


def test_builtin_order_rules():
    with pytest.raises(ConfigError, match="needs a weight_sharing step"):
        load_recipe([{"type": "huffman_coding"}])
    with pytest.raises(ConfigError, match="cannot follow step 1 \\(deep_compression\\)"):
        load_recipe([{"type": "deep_compression"}, {"type": "finetune"}])
    r = load_recipe([{"type": "weight_sharing"}, {"type": "finetune"}, {"type": "huffman_coding"}])
    assert [s.type for s in r.steps] == ["weight_sharing", "finetune", "huffman_coding"]


def test_steps_read_the_run_data_unless_they_name_their_own():
    r = load_recipe({"dataset": "digits", "steps": [{"type": "finetune"}, {"type": "finetune", "dataset": "fashion-mnist"}]})
    assert r.settings.dataset == "digits"
    assert [s.config.dataset for s in r.steps] == [None, "fashion-mnist"]


def test_overrides_by_type_number_wildcard_and_nested():
    raw = [{"type": "finetune", "epochs": 5}, {"type": "deep_compression", "prune": {"default_keep": 0.1}}]
    r = load_recipe(raw, ["finetune.epochs=2", "2.share.bits=4", "*.max_steps=3", "dataset=digits"])
    ft, dc = r.steps[0].config, r.steps[1].config
    assert ft.epochs == 2 and ft.max_steps == 3 and r.settings.dataset == "digits" and ft.dataset is None
    assert dc.share.bits == 4
    # The wildcard reaches every nested training config, present or defaulted.
    assert dc.prune.train.max_steps == 3 and dc.share_train.max_steps == 3
    assert raw[0]["epochs"] == 5  # the caller's data is not modified


def test_bad_overrides():
    raw = [{"type": "finetune"}, {"type": "finetune"}]
    with pytest.raises(ConfigError, match="2 'finetune' steps; name one by number"):
        apply_overrides(raw, ["finetune.epochs=1"])
    with pytest.raises(ConfigError, match="steps 1..2, not 3"):
        apply_overrides(raw, ["3.epochs=1"])
    with pytest.raises(ConfigError, match="no step of this recipe has a field 'bitz'"):
        apply_overrides(raw, ["*.bitz=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(raw, ["finetune.epochs"])
    with pytest.raises(ConfigError, match="no run-wide field 'epochs'"):
        apply_overrides(raw, ["epochs=1"])
    with pytest.raises(ConfigError, match="no 'evaluate' step"):
        apply_overrides(raw, ["evaluate.split=val"])


def test_resolved_recipe_round_trips_through_yaml():
    r = load_recipe("name: dc\nsteps:\n  - type: deep_compression\n    prune: {default_keep: 0.1}\n")
    again = load_recipe(r.to_yaml())
    assert again.to_dict() == r.to_dict()
    assert again.steps[0].config.prune.default_keep == 0.1


def test_unknown_names_are_unknown_name_errors():
    from torchslim.recipes import get_step

    with pytest.raises(UnknownNameError, match="Did you mean: weight_sharing"):
        get_step("weight_shareing")


@pytest.mark.parametrize(
    "text,message",
    [
        ('a: &a ["x","x","x","x"]\nb: &b [*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\n', "anchors and aliases"),
        ("[" * 10000 + "]" * 10000, "nested deeper than 32 levels"),
        ("name: a\nname: b\nsteps: [{type: fp16}]\n", "duplicate key 'name'"),
        ("1: x\n", "keys must be text, got 1"),
    ],
)
def test_hostile_yaml_is_refused_before_it_is_expanded(text, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(text)


def test_recipe_files_must_be_utf8(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_bytes("name: caf\xe9\nsteps: [{type: fp16}]\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 9\)"):
        load_recipe(p)
