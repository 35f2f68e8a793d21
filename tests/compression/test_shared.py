import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.compression import SharedConv2d, SharedLinear, WeightSharingConfig, share_weights
from torchslim.errors import CompatibilityError, TargetError
from torchslim.models import create_model


def _sparse_lenet5():
    m = create_model("lenet5")
    with torch.no_grad():
        for p in (m.fc1.weight, m.conv2.weight):
            p.mul_((torch.rand_like(p) < 0.3).float())
    return m


def test_codebook_size_zeros_kept_and_original_untouched():
    m = _sparse_lenet5()
    before = copy.deepcopy(m.state_dict())
    s, rep = share_weights(m, WeightSharingConfig(layer_bits={"Conv2d": 8, "Linear": 5}, bias_bits=6))
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    assert isinstance(s.conv1, SharedConv2d) and isinstance(s.fc1, SharedLinear)
    assert s.fc1.weight[s.fc1.weight != 0].unique().numel() <= 31
    assert s.conv2.weight.unique().numel() <= 256
    assert s.fc1.bias.unique().numel() <= 63
    assert torch.equal(s.fc1.weight == 0, m.fc1.weight == 0)
    by_name = {e.name: e for e in rep.layers}
    assert by_name["fc1"].after["bits"] == 5 and by_name["conv1"].after["bits"] == 8
    # Uniform init weights over [-a, a] in k equal cells: relative rms error 1/k.
    assert by_name["fc1"].after["rel_error"] == pytest.approx(1 / 31, rel=0.05)
    assert by_name["conv2"].after["rel_error"] == pytest.approx(1 / 255, rel=0.1)
    x = torch.randn(8, 1, 28, 28)
    assert (s(x) - m(x)).abs().max() < 0.05


def test_centroid_gradient_is_the_sum_of_its_cluster_gradients():
    m = nn.Sequential(nn.Linear(20, 10))
    s, _ = share_weights(m, WeightSharingConfig(bits=3, bias_bits=None, codebook_dtype="float32"))
    layer = s[0]
    x, y = torch.randn(16, 20), torch.randint(0, 10, (16,))
    F.cross_entropy(layer(x), y).backward()
    # Reference: the gradient of the dense weight, pooled per cluster by hand.
    w = layer.weight.detach().clone().requires_grad_(True)
    F.cross_entropy(F.linear(x, w, layer.bias.detach()), y).backward()
    pooled = torch.zeros(8).index_add_(0, layer.indices.long().flatten(), w.grad.flatten())
    assert torch.allclose(layer.centroids.grad, pooled[1:], atol=1e-6)


def test_pruned_weights_stay_zero_through_training():
    m = _sparse_lenet5()
    s, _ = share_weights(m, WeightSharingConfig(bits=4))
    opt = torch.optim.SGD(s.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(s(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
        opt.step()
    assert torch.equal(s.fc1.weight == 0, m.fc1.weight == 0)


def test_float16_codebook_values_are_representable():
    s, _ = share_weights(nn.Sequential(nn.Linear(64, 64)), WeightSharingConfig(bits=5))
    c = s[0].centroids.detach()
    assert torch.equal(c, c.half().float())


def test_bad_targets_and_double_sharing():
    m = create_model("lenet300")
    with pytest.raises(TargetError, match="matched no"):
        share_weights(m, WeightSharingConfig(layer_bits={"re:conv.*": 4}))
    s, _ = share_weights(m, WeightSharingConfig(bits=3))
    with pytest.raises(CompatibilityError, match="already"):
        share_weights(s, WeightSharingConfig(bits=3))
