import pytest
import torch

from torchslim.models import create_model
from torchslim.pruning import (
    GradualConfig,
    GradualPruning,
    IterativeConfig,
    KeepSparsity,
    MagnitudeConfig,
    cubic_sparsity,
    make_permanent,
    prune,
    prune_gradual,
    prune_iterative,
)
from torchslim.training import TrainConfig, fit


def _cfg(**kw):
    return TrainConfig(**{"epochs": 1, "batch_size": 64, "lr": 0.05, "augment": False, **kw})


def test_cubic_schedule_values():
    kw = dict(initial=0.0, final=0.8, begin_step=100, n_prunes=4, frequency=50)
    assert cubic_sparsity(0, **kw) == 0.0
    assert cubic_sparsity(100, **kw) == 0.0
    assert cubic_sparsity(150, **kw) == pytest.approx(0.8 * (1 - 0.75**3))  # 0.4625
    assert cubic_sparsity(175, **kw) == pytest.approx(0.4625)  # held until the next update
    assert cubic_sparsity(200, **kw) == pytest.approx(0.7)
    assert cubic_sparsity(250, **kw) == pytest.approx(0.7875)
    assert cubic_sparsity(300, **kw) == 0.8
    assert cubic_sparsity(10_000, **kw) == 0.8
    assert cubic_sparsity(150, initial=0.5, final=0.9, begin_step=100, n_prunes=2, frequency=50) == pytest.approx(
        0.9 - 0.4 * 0.125
    )


def test_masks_stay_zero_through_fit_and_grads_reach_orig(digits):
    train, val, _ = digits
    pruned, _ = prune(create_model("lenet300"), MagnitudeConfig(amount=0.8))
    mask = pruned.fc1.weight_mask.clone()
    orig = pruned.fc1.weight_orig
    before = orig.detach().clone()
    fit(pruned, _cfg(max_steps=15), train, val, quiet=True)
    assert pruned.fc1.weight_orig is orig  # the optimizer trained the reparametrized parameter
    assert not torch.equal(orig.detach()[mask.bool()], before[mask.bool()])
    assert torch.equal(pruned.fc1.weight_mask, mask)
    pruned(train.images[:2])
    assert (pruned.fc1.weight[~mask.bool()] == 0).all()
    assert float((pruned.fc1.weight == 0).float().mean()) == pytest.approx(0.8, abs=1e-4)


def test_keep_sparsity_for_permanent_masks(digits):
    train, val, _ = digits
    pruned, _ = prune(create_model("lenet300"), MagnitudeConfig(amount=0.7))
    plain = make_permanent(pruned)
    zeros = plain.fc2.weight.detach() == 0
    keeper = KeepSparsity(plain)
    fit(plain, _cfg(max_steps=10), train, val, callbacks=[keeper], quiet=True)
    assert (plain.fc2.weight[zeros] == 0).all()
    assert set(keeper.masks) == {"fc1", "fc2", "fc3"}


def test_gradual_callback_reaches_final_sparsity_in_fit(digits):
    train, val, _ = digits
    # 1297 samples / 64 = 20 steps per epoch; schedule over steps 0..15
    cfg = GradualConfig(final_sparsity=0.9, begin_step=0, n_prunes=3, frequency=5, train=_cfg(epochs=1))
    model, report, result = prune_gradual(create_model("lenet300"), cfg, train, val, targets={"fc3": 0.5})
    assert result.steps == 20
    assert float((model.fc1.weight == 0).float().mean()) == pytest.approx(0.9, abs=1e-4)
    assert float((model.fc3.weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    assert {e.name: e.after["sparsity"] for e in report.layers}["fc2"] == pytest.approx(0.9, abs=1e-4)
    assert result.history[-1]["sparsity"] > 0.85


def test_gradual_masks_follow_schedule_step_by_step():
    model = torch.nn.Sequential(torch.nn.Linear(20, 50))
    cb = GradualPruning(GradualConfig(final_sparsity=0.8, begin_step=2, n_prunes=4, frequency=2))
    cb.attach(model)
    seen = {}
    for step in range(1, 13):
        cb.on_step_end(model, step)
        seen[step] = float((model[0].weight == 0).float().mean())
    for step, s in seen.items():
        assert s == pytest.approx(round(cb.sparsity_at(step) * 1000) / 1000, abs=1e-3), step
    assert seen[1] == 0.0 and seen[10] == pytest.approx(0.8)
    state = cb.state_dict()
    other = GradualPruning(cb.config)
    other.load_state_dict(state)
    assert other.last_step == 10 and other.current == pytest.approx(0.8)
    assert not other.due(10) and not other.due(12)


@pytest.mark.slow
def test_gradual_run_resumes_to_the_same_masks(digits, tmp_path):
    train, val, _ = digits
    cfg = GradualConfig(
        final_sparsity=0.8, begin_step=2, n_prunes=4, frequency=3, train=_cfg(epochs=1, checkpoint_every_steps=4)
    )
    start = create_model("lenet300")
    full, _, _ = prune_gradual(start, cfg, train, val)
    part_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 8})})
    prune_gradual(start, part_cfg, train, val, run_dir=tmp_path)
    resumed, _, res = prune_gradual(start, cfg, train, val, run_dir=tmp_path, resume=True)
    assert res.steps == 20
    for n in ("fc1", "fc2", "fc3"):
        assert torch.equal(resumed.get_submodule(n).weight_mask, full.get_submodule(n).weight_mask), n


def test_schedule_longer_than_training_is_refused(digits):
    from torchslim.errors import ConfigError

    train, val, _ = digits
    cfg = GradualConfig(final_sparsity=0.9, n_prunes=10, frequency=100, train=_cfg(epochs=1))
    with pytest.raises(ConfigError, match="ends at step 1000 .* training runs 20 steps"):
        prune_gradual(create_model("lenet300"), cfg, train, val)


def test_iterative_rounds_reach_final_sparsity(digits):
    train, val, _ = digits
    cfg = IterativeConfig(final_sparsity=0.75, rounds=2, train=_cfg(max_steps=5))
    assert cfg.sparsity_at(1) == pytest.approx(0.5)
    model, report, results = prune_iterative(create_model("lenet300"), cfg, train, val)
    assert len(results) == 2
    assert [r["sparsity"] for r in report.summary["rounds"]] == pytest.approx([0.5, 0.75], abs=1e-4)
    assert float((model.fc1.weight == 0).float().mean()) == pytest.approx(0.75, abs=1e-4)


@pytest.mark.slow
def test_masked_finetune_recovers_accuracy(digits):
    from torchslim.measure import accuracy

    train, val, test = digits
    model = create_model("lenet300")
    fit(model, _cfg(epochs=2, lr=0.1), train, val, quiet=True)
    base = accuracy(model, test)
    pruned, _ = prune(model, MagnitudeConfig(amount=0.9, scope="global"))
    fit(pruned, _cfg(epochs=1, lr=0.05), train, val, quiet=True)
    assert base > 85.0
    assert accuracy(pruned, test) >= base - 3.0
    assert float((pruned.fc1.weight == 0).float().mean()) > 0.85


def test_gradual_callback_keeps_the_last_step_weights(digits):
    train, val, _ = digits
    model = create_model("lenet300")
    cb = GradualPruning(GradualConfig(final_sparsity=0.9, begin_step=0, n_prunes=2, frequency=5))
    cb.attach(model)
    fit(model, _cfg(epochs=1), train, val, callbacks=[cb], quiet=True)
    assert cb.total_steps == 20 and cb.state_dict()["last_step"] == 10
    mask = cb.final_state["fc1.weight_mask"]
    assert float(1 - mask.mean()) == pytest.approx(0.9, abs=1e-4)


def test_gradual_schedule_counts_the_batches_of_a_dataloader():
    """A DataLoader's length is its batches per epoch, not samples: 40 samples in 5 batches, 2 epochs = 10 steps."""
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from torchslim.errors import ConfigError
    from torchslim.pruning import GradualConfig, prune
    from torchslim.training.config import TrainConfig

    torch.manual_seed(0)
    x, y = torch.randn(40, 12), torch.randint(0, 3, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    train = TrainConfig(epochs=2, batch_size=8, lr=0.01, augment=False)
    cfg = GradualConfig(final_sparsity=0.5, begin_step=0, frequency=2, n_prunes=4, train=train)
    pruned, report = prune(model, cfg, train_data=loader, val_data=loader)
    assert report.summary["model_sparsity_after"] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ConfigError, match="ends at step 12 .* training runs 10 steps"):
        prune(model, GradualConfig(final_sparsity=0.5, begin_step=0, frequency=3, n_prunes=4, train=train),
              train_data=loader, val_data=loader)
