import pytest
import torch

from torchslim.compression import GradualMagnitude, MagnitudePruningConfig, magnitude_prune
from torchslim.compression.magnitude import cubic_keep
from torchslim.data import load_dataset
from torchslim.errors import ConfigError, TargetError
from torchslim.models import create_model


def test_cubic_schedule_matches_zhu_and_gupta():
    # s_t = s_f + (s_i - s_f)(1 - t)^3 with s_i = 0, s_f = 0.9: keep = 1 - s_t.
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        s_t = 0.9 + (0.0 - 0.9) * (1 - t) ** 3
        assert cubic_keep(0.1, t) == pytest.approx(1 - s_t)
    assert cubic_keep(0.1, 2.0) == pytest.approx(0.1)


def test_one_shot_keeps_exact_fractions_of_largest_weights():
    m = create_model("lenet5")
    cfg = MagnitudePruningConfig(keep={"conv2": 0.12, "fc1": 0.08}, schedule="one-shot", train={"epochs": 0})
    p, rep = magnitude_prune(m, cfg)
    for name, keep in (("conv2", 0.12), ("fc1", 0.08)):
        w, w0 = getattr(p, name).weight, getattr(m, name).weight
        assert float((w != 0).float().mean()) == pytest.approx(keep, abs=1e-4)
        # Survivors are the largest magnitudes, unchanged.
        assert float(w0.detach()[w != 0].abs().min()) >= float(w0.detach()[w == 0].abs().max())
        assert torch.equal(w[w != 0], w0[w != 0])
    assert float((p.conv1.weight != 0).float().mean()) == 1.0  # not targeted
    assert not hasattr(p.fc1, "weight_orig")  # reparametrisation removed
    assert {e.name: round(e.after["kept"], 3) for e in rep.layers} == {"conv2": 0.12, "fc1": 0.08}


@pytest.mark.slow
def test_gradual_pruning_with_retraining_on_digits():
    torch.manual_seed(0)
    train, val = load_dataset("digits", "train"), load_dataset("digits", "val")
    m = create_model("lenet300")
    cfg = MagnitudePruningConfig(default_keep=0.1, schedule="gradual", prune_epochs=2, prune_frequency=5,
                                 train={"epochs": 2, "lr": 0.05, "batch_size": 64})
    p, _ = magnitude_prune(m, cfg, train_data=train, val_data=val, quiet=True)
    for name in ("fc1", "fc2", "fc3"):
        assert float((getattr(p, name).weight != 0).float().mean()) == pytest.approx(0.1, abs=2e-3)
    from torchslim.measure import accuracy

    assert accuracy(p, load_dataset("digits", "test")) > 70.0  # chance is 10%


def test_gradual_callback_reaches_the_target_at_80_percent_of_steps():
    m = create_model("lenet300")
    import torch.nn.utils.prune as tprune

    tprune.identity(m.fc1, "weight")
    cb = GradualMagnitude({"fc1": 0.2}, frequency=1)
    cb.on_train_start(m, 100, 10)
    cb.on_step_end(m, 40)
    assert float(m.fc1.weight_mask.mean()) == pytest.approx(cubic_keep(0.2, 0.5), abs=1e-3)
    cb.on_step_end(m, 80)
    assert float(m.fc1.weight_mask.mean()) == pytest.approx(0.2, abs=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="keep"):
        MagnitudePruningConfig(keep={"fc1": 1.5})
    with pytest.raises(ValueError, match="default_keep"):
        MagnitudePruningConfig()
    with pytest.raises(TargetError):
        magnitude_prune(create_model("lenet300"), MagnitudePruningConfig(keep={"conv9": 0.5}))
    with pytest.raises(ConfigError, match="train_data"):
        magnitude_prune(create_model("lenet300"), MagnitudePruningConfig(default_keep=0.5))
