import copy

import pytest
import torch

from torchslim.data import load_dataset
from torchslim.errors import ConfigError
from torchslim.measure import accuracy, sparsity
from torchslim.models import create_model
from torchslim.recovery import FinetuneConfig, finetune
from torchslim.training import DistillConfig, TrainConfig, fit


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    m = create_model("lenet300")
    fit(m, TrainConfig(epochs=4, batch_size=64, lr=0.05, augment=False), load_dataset("digits", "train"), load_dataset("digits", "val"), quiet=True)
    return m


def _prune(model, amount):
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                thr = p.abs().flatten().kthvalue(int(amount * p.numel())).values
                p[p.abs() <= thr] = 0
    return m


def test_finetune_keeps_zeros_and_recovers(trained):
    test = load_dataset("digits", "test")
    pruned = _prune(trained, 0.95)
    before = accuracy(pruned, test)
    s0 = sparsity(pruned)
    new, res = finetune(pruned, FinetuneConfig(dataset="digits", epochs=3, batch_size=64, lr=0.02, augment=False), quiet=True)
    assert sparsity(new) == pytest.approx(s0, abs=1e-9)  # every pruned weight is still exactly zero
    assert sparsity(pruned) == pytest.approx(s0)  # the input model is untouched
    after = accuracy(new, test)
    assert after > before and after > 85.0
    assert res.report.summary["sparsity_after"] == pytest.approx(s0)


def test_distillation_runs_and_matches_features(trained):
    pruned = _prune(trained, 0.9)
    cfg = FinetuneConfig(dataset="digits", epochs=2, batch_size=64, lr=0.02, augment=False,
                         distill=DistillConfig(temperature=4, alpha=0.9, features=["fc2"], feature_weight=0.5))
    before = {n: (p.requires_grad, p.detach().clone()) for n, p in trained.named_parameters()}
    new, res = finetune(pruned, cfg, teacher=trained, quiet=True)
    assert res.report.method == "distill"
    assert accuracy(new, load_dataset("digits", "test")) > 85.0
    # The teacher is the caller's model: its weights and requires_grad flags are untouched, so a
    # copy of it can be fine-tuned afterwards.
    for n, p in trained.named_parameters():
        assert p.requires_grad == before[n][0] and torch.equal(p, before[n][1])


def test_distill_without_teacher_is_refused(trained):
    with pytest.raises(ConfigError, match="no teacher"):
        finetune(trained, FinetuneConfig(dataset="digits", epochs=1, distill=DistillConfig()), quiet=True)


def test_unknown_feature_layer_suggests(trained):
    cfg = FinetuneConfig(dataset="digits", epochs=1, distill=DistillConfig(features=["fc9"]))
    with pytest.raises(Exception, match="fc9.*not found.*Did you mean"):
        finetune(trained, cfg, teacher=trained, quiet=True)


def test_finetune_on_dataloaders_with_a_user_loss_and_distillation():
    """Any DataLoader: a user loss, MSE distillation from the teacher, best epoch by a metric."""
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from torchslim.recovery import FinetuneConfig, finetune
    from torchslim.training.config import DistillConfig

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = (x[:, 0] > 0).long()
    train = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2)).train()
    calls = []

    def loss_fn(out, target):
        calls.append(len(target))
        return nn.functional.cross_entropy(out, target)

    config = FinetuneConfig(epochs=4, lr=0.05, augment=False, distill=DistillConfig(loss="mse", alpha=0.1))
    new, res = finetune(teacher, config, teacher=teacher, train_data=train, val_data=val, loss_fn=loss_fn, quiet=True)
    assert sum(calls) == 4 * 192 and res.train.steps == 24
    assert res.report.summary["best_val_metric"] >= 75.0  # above chance (50%) on 64 held-out samples
    assert teacher.training is True
    with pytest.raises(Exception, match="pass both train_data and val_data"):
        finetune(teacher, config, train_data=train, quiet=True)
