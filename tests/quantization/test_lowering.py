import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.errors import CompatibilityError
from torchslim.quantization import StaticInt8Config, compile_int8, kernels, quantize
from torchslim.quantization.lowering import lower_static
from torchslim.quantization.static_modules import dequantize_uint8, quantize_tensor


def _calls(gm: torch.fx.GraphModule, target) -> int:
    return sum(n.target == target for n in gm.graph.nodes)


def test_lenet5_lowers_to_integer_calls_with_identical_outputs(lenet5, digits, calib):
    q, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    state = {k: v.clone() for k, v in q.state_dict().items()}
    low = compile_int8(q)
    assert isinstance(low, torch.fx.GraphModule)
    # One quantization of the float input, four layer calls, integers all the way: no dequantize.
    assert _calls(low, quantize_tensor) + _calls(low, kernels.quantize_unfold) == 1
    assert _calls(low, "integer_forward") == 4
    assert _calls(low, dequantize_uint8) == 0
    x = digits[2].images
    with torch.no_grad():
        assert torch.equal(low(x), q(x))
    # The caller's model is untouched: same buffers, its layers not frozen.
    assert all(torch.equal(v, state[k]) for k, v in q.state_dict().items())
    assert not q.conv1.frozen and low.conv1.frozen


def test_resnet_fused_adds_lower_to_one_kernel_each(resnet8, digits, calib):
    q, _ = quantize(resnet8, StaticInt8Config(), calib_data=calib)
    fused = sum(getattr(m, "fuse", "") in ("add", "add_relu") for m in q.modules())
    low = lower_static(q)
    assert fused == 3 and _calls(low, "integer_add") == fused
    x = digits[2].images
    with torch.no_grad():
        ref = q(x)
        assert torch.equal(low(x), ref)
        assert torch.equal(low(x), ref)  # the in-place accumulators leak nothing between calls


class Functional(nn.Module):
    """Functional ReLU/pooling, a view through size(), an op with no integer handler, avg pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(7)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.sigmoid(self.conv2(x))  # dequantized, run in float, quantized again for pool + fc
        x = self.pool(x).view(x.size(0), 8, 2, 2)
        return self.fc(self.flat(x))


def test_functional_ops_and_float_fallbacks_match_eager(digits, calib):
    torch.manual_seed(0)
    m = Functional().eval()
    q, _ = quantize(m, StaticInt8Config(), calib_data=calib)
    low = lower_static(q)
    assert _calls(low, dequantize_uint8) == 0  # conv2 emits float for the sigmoid: no integers to undo
    assert _calls(low, torch.sigmoid) == 1 and _calls(low, quantize_tensor) + _calls(low, kernels.quantize_unfold) == 2
    x = digits[2].images[:50]
    with torch.no_grad():
        assert torch.equal(low(x), q(x))
        assert float((low(x) - m(x)).norm() / m(x).norm()) < 0.05


def test_unsupported_layer_between_integer_layers_runs_on_dequantized_values(calib):
    from tests.quantization.test_static import WithUnsupported

    torch.manual_seed(0)
    m = WithUnsupported().eval()
    q, _ = quantize(m, StaticInt8Config(), calib_data=calib)
    low = lower_static(q)
    assert _calls(low, "norm") == 1
    with torch.no_grad():
        assert torch.equal(low(calib[:32]), q(calib[:32]))


def test_lowered_copy_is_a_snapshot(lenet5, digits, calib):
    q, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    low = lower_static(q)
    x = digits[2].images[:32]
    with torch.no_grad():
        before = low(x)
        q.fc2.bias.add_(1.0)
        assert torch.equal(low(x), before)
        assert torch.allclose(q(x), before + 1.0, atol=1e-5)


def test_eager_layers_see_changed_quantization(lenet5, digits, calib):
    q, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    x = digits[2].images[:32]
    with torch.no_grad():
        q(x)  # binds the layers' kernel arguments
        s, zp = q.fc1.activation_qparams(1)
        q.fc1.set_qparams(input=q.fc1.activation_qparams(0), output=(s * 2, zp))
        q.fc2.set_qparams(input=(s * 2, zp))
        assert torch.equal(q(x), copy.deepcopy(q)(x))  # a fresh copy binds from scratch


def test_lower_static_errors(lenet5):
    with pytest.raises(CompatibilityError, match="no static INT8 layer"):
        lower_static(lenet5)

    class Branchy(nn.Module):
        def __init__(self, q: nn.Module) -> None:
            super().__init__()
            self.q = q

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.q(x) if x.sum() > 0 else -self.q(x)  # data-dependent: torch.fx cannot trace it

    q = Branchy(nn.Sequential(nn.Flatten()))
    from torchslim.quantization import QLinear

    q.q.append(QLinear(64, 10))
    with pytest.raises(CompatibilityError, match="torch.fx can trace"):
        lower_static(q)


def test_torchvision_model_with_concatenated_branches_lowers_exactly():
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.squeezenet1_1(num_classes=10).eval()  # Fire modules: torch.cat of two conv branches
    q, _ = quantize(m, StaticInt8Config(), calib_data=torch.randn(16, 3, 48, 48))
    low = lower_static(q)
    assert _calls(low, torch.cat) == 8 and _calls(low, "integer_forward") == 26
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(low(x), q(x))


def test_native_kernels_and_pytorch_ops_give_the_same_lowered_outputs(lenet5, digits, calib):
    q, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    fused, plain = lower_static(q), lower_static(q, native=False)
    if kernels.load() is not None:  # one fused pass for LeNet-5's input quantization + unfold and each pool
        assert _calls(fused, kernels.quantize_unfold) == 1 and _calls(fused, kernels.max_pool2x2) == 2
    assert _calls(plain, kernels.max_pool2x2) == 0 and _calls(plain, quantize_tensor) == 1
    x = digits[2].images
    with torch.no_grad():
        assert torch.equal(fused(x), plain(x))
