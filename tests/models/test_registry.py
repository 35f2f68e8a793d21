import pytest
import torch

from torchslim.errors import UnknownNameError
from torchslim.models import create_model, get_entry, model_names


@pytest.mark.parametrize(
    "name,params", [("lenet300", 266_610), ("lenet5", 431_080), ("resnet20", 272_186), ("resnet8", 77_754)]
)
def test_param_counts_and_output_shape(name, params):
    m = create_model(name)
    assert sum(p.numel() for p in m.parameters()) == params
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_every_torchvision_classifier_is_registered():
    import torchvision.models as tvm

    names = set(model_names("torchvision"))
    assert {f"tv/{n}" for n in tvm.list_models(module=tvm)} == names
    assert len(names) >= 70


def test_torchvision_model_builds_with_random_weights():
    m = create_model("tv/resnet18", num_classes=7).eval()
    assert m(torch.randn(1, *get_entry("tv/resnet18").input_shape)).shape == (1, 7)


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownNameError, match="Did you mean: lenet5"):
        create_model("lenet-5")


def test_minilm_loads_offline():
    m = create_model("minilm")
    assert sum(p.numel() for p in m.parameters()) == 22_713_216
