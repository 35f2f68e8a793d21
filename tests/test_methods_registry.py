"""The one method registry: verbs, recipes, the CLI and checkpoint codecs read the same entries."""

import argparse
import json
import subprocess
import sys
from typing import ClassVar

import pytest
import torch
import torch.nn as nn

import torchslim.pruning  # noqa: F401  (registers the pruning methods)
import torchslim.quantization  # noqa: F401  (registers the quantization methods)
from torchslim import checkpoint
from torchslim.cli import prune as cli_prune
from torchslim.cli import quantize as cli_quantize
from torchslim.config import StrictConfig
from torchslim.errors import ConfigError, UnknownNameError
from torchslim.layer_report import Report
from torchslim.methods import (
    CALIBRATION,
    CODEC_HOMES,
    QUANTIZED,
    SPARSE,
    method_for,
    method_named,
    methods,
    register_method,
    unregister_method,
)
from torchslim.pruning import MagnitudeConfig, prune
from torchslim.quantization import StaticInt8Config, quantize
from torchslim.recipes import compress, get_step, load_recipe, step_types


def _cli_choices(module) -> list[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    module.register(sub)
    (parser,) = sub.choices.values()
    (action,) = [a for a in parser._actions if a.dest == "method"]
    return list(action.choices)


def test_every_method_is_a_recipe_step_and_a_cli_choice_with_the_same_name():
    assert {m.verb for m in methods()} == {"quantize", "prune"}
    steps = set(step_types())
    for verb, cli in (("quantize", cli_quantize), ("prune", cli_prune)):
        names = [m.name for m in methods(verb)]
        assert len(names) >= 7 if verb == "quantize" else len(names) >= 8
        assert _cli_choices(cli) == names
        for m in methods(verb):
            assert m.name in steps
            step = get_step(m.name)
            assert step.config_cls is m.config_cls
            assert step.produces == m.produces and dict(step.forbidden_after) == dict(m.forbidden_after)
            assert m.config_cls.method == m.name  # one spelling: the config's own name
    assert method_named("int8-static") is method_named("int8_static")  # the CLI's dash form reads the same
    assert method_named("gradual").verb == "prune" and method_named("iterative").verb == "prune"


def test_unknown_names_say_what_was_meant():
    with pytest.raises(UnknownNameError, match=r"unknown quantization method 'int8_statik'\. Did you mean: int8_static"):
        method_named("int8_statik", "quantize")
    with pytest.raises(ConfigError, match=r"unknown step type .magnitdue.\. Did you mean: magnitude"):
        load_recipe([{"type": "magnitdue", "amount": 0.5}])
    with pytest.raises(argparse.ArgumentTypeError, match="Did you mean: weight_only"):
        cli_quantize._method_arg("weight-onyl")
    with pytest.raises(ConfigError, match=r"quantize\(\) needs one of the config classes .*MagnitudeConfig is a method of prune"):
        quantize(nn.Linear(2, 2), MagnitudeConfig(amount=0.5))


def test_dispatch_is_by_exact_type_and_checks_data_before_work():
    assert method_for(StaticInt8Config(), "quantize").handler.__name__ == "static_int8_method"
    with pytest.raises(ConfigError, match="StaticInt8Config needs calib_data"):
        quantize(nn.Sequential(nn.Linear(4, 2)), StaticInt8Config())


class ScaleConfig(StrictConfig):
    """Test method: multiply every Linear weight by ``factor``."""

    method: ClassVar[str] = "test_scale"
    factor: float = 0.5


def _scale(model: nn.Module, config: ScaleConfig, call) -> tuple[nn.Module, Report]:
    import copy

    report = call.report or Report("prune", "test_scale")
    new = copy.deepcopy(model)
    with torch.no_grad():
        for name, m in new.named_modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(config.factor)
                report.add(name, "Linear", "scaled", f"x{config.factor}")
    return new, report


@pytest.fixture
def scale_method():
    yield register_method(ScaleConfig, verb="quantize", handler=_scale, produces={QUANTIZED}, needs={CALIBRATION})
    unregister_method(ScaleConfig)


def test_a_method_registered_here_works_from_the_verb_and_from_recipes(scale_method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    calib = torch.randn(8, 1, 28, 28)
    with pytest.raises(ConfigError, match="ScaleConfig needs calib_data"):
        quantize(model, ScaleConfig())
    q, report = quantize(model, ScaleConfig(factor=0.25), calib_data=calib)
    assert torch.allclose(q[1].weight, model[1].weight * 0.25)
    assert report.method == "test_scale" and [e.action for e in report.layers] == ["scaled"]
    assert report.summary["output_rel_error"] > 0  # quantize's own summary ran around the new method

    assert "test_scale" in step_types()
    recipe = load_recipe([{"type": "magnitude", "amount": 0.5}, {"type": "test_scale", "factor": 0.5}])
    assert isinstance(recipe.steps[1].config, ScaleConfig) and recipe.steps[1].config.factor == 0.5
    with pytest.raises(ConfigError, match="cannot follow step 1 \\(test_scale\\)"):
        load_recipe([{"type": "test_scale"}, {"type": "structured", "ratio": 0.5}])  # the entry's ordering rule
    res = compress(model, [{"type": "test_scale", "factor": 0.5}], overrides=["dataset=digits", "latency_runs=1"], quiet=True)
    assert torch.allclose(res.model[1].weight, model[1].weight * 0.5)


def test_a_prune_method_registered_here_works_from_prune(scale_method):
    register_method(ScaleConfig, verb="prune", handler=_scale, produces={SPARSE})
    m, report = prune(nn.Sequential(nn.Linear(4, 4)), ScaleConfig(factor=0.0))
    assert float(m[0].weight.detach().abs().sum()) == 0.0 and report.layers[0].action == "scaled"


def test_codec_homes_name_exactly_the_kinds_their_packages_register():
    # A fresh process: other tests register codecs of their own.
    code = (
        "import json\n"
        "from torchslim import checkpoint\n"
        "from torchslim.methods import CODEC_HOMES\n"
        "before = set(checkpoint._CODECS_BY_KIND) | set(checkpoint._MODEL_CODECS)\n"
        "import importlib\n"
        "for home in sorted(set(CODEC_HOMES.values())):\n"
        "    importlib.import_module(home)\n"
        "after = set(checkpoint._CODECS_BY_KIND) | set(checkpoint._MODEL_CODECS)\n"
        "print(json.dumps([sorted(before), sorted(after - before)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, new = json.loads(out)
    assert before == ["batchnorm2d", "conv2d", "layernorm", "linear"]  # importing the checkpoint loads no method
    assert new == sorted(CODEC_HOMES)


def test_loading_a_checkpoint_imports_only_the_package_of_the_kind_it_names(tmp_path):
    path = tmp_path / "q.safetensors"
    m, _ = quantize(nn.Sequential(nn.Linear(8, 4)), torchslim.quantization.DynamicInt8Config())
    checkpoint.save_checkpoint(m, path)
    code = (
        "import sys, torch.nn as nn\n"
        "from torchslim.checkpoint import load_checkpoint\n"
        f"m, _ = load_checkpoint({str(path)!r}, model=nn.Sequential(nn.Linear(8, 4)))\n"
        "print(type(m[0]).__name__, 'torchslim.pruning' in sys.modules, 'torchslim.recipes' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["Int8DynamicLinear", "False", "False"]


def test_a_missing_optional_dependency_is_an_error_with_a_hint_not_a_missing_step(monkeypatch):
    from torchslim.errors import MissingDependencyError
    from torchslim.pruning import StructuredConfig

    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # as if torch-pruning were not installed
    assert {"structured", "export"} <= set(step_types())
    with pytest.raises(MissingDependencyError, match=r"pip install 'torchslim\[prune\]'"):
        prune(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 2)), StructuredConfig(ratio=0.5, input_shape=[1, 8, 8]))
