import math

import pytest
import torch
import torch.nn as nn

from torchslim.data import load_dataset
from torchslim.errors import CheckpointError, ConfigError, TrainingError
from torchslim.models import create_model
from torchslim.training import Callback, TrainConfig, fit
from torchslim.training.loop import lr_at


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "val")


def test_lr_schedule_values():
    c = TrainConfig(epochs=10, lr=0.1, warmup_epochs=1, schedule="cosine")
    assert lr_at(c, 0, 100) == pytest.approx(0.001)
    assert lr_at(c, 99, 100) == pytest.approx(0.1)
    assert lr_at(c, 100 + 450, 100) == pytest.approx(0.05)  # half-way through the cosine
    s = TrainConfig(epochs=30, lr=0.1, schedule="step", step_size=10, gamma=0.1)
    assert lr_at(s, 25 * 100, 100) == pytest.approx(0.001)


def test_same_seed_same_weights(digits):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, max_steps=10)
    a, b = create_model("lenet300"), create_model("lenet300")
    b.load_state_dict(a.state_dict())
    fit(a, cfg, *digits, quiet=True)
    fit(b, cfg, *digits, quiet=True)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_training_learns_digits(digits):
    torch.manual_seed(0)
    m = create_model("lenet300")
    r = fit(m, TrainConfig(epochs=3, batch_size=64, lr=0.05, augment=False), *digits, quiet=True)
    assert r.best_val_accuracy > 88.0 and r.epochs_run == 3 and len(r.history) == 3


def test_callback_runs_after_every_step(digits):
    class Count(Callback):
        name = "count"

        def __init__(self):
            self.steps = []

        def on_step_end(self, model, step):
            self.steps.append(step)

    cb = Count()
    fit(create_model("lenet300"), TrainConfig(epochs=1, batch_size=64, max_steps=7), *digits, callbacks=[cb], quiet=True)
    assert cb.steps == list(range(1, 8))


def test_non_finite_loss_stops_with_advice(digits, tmp_path):
    class Explode(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) * (math.inf if self.training else 1.0)

    with pytest.raises(TrainingError, match="non-finite loss .* lower the learning rate"):
        fit(Explode(), TrainConfig(epochs=1, batch_size=64), *digits, run_dir=tmp_path, quiet=True)


def test_teacher_with_other_output_shape_is_refused(digits):
    from torchslim.training import DistillConfig

    cfg = TrainConfig(epochs=1, batch_size=64, distill=DistillConfig())
    with pytest.raises(ConfigError, match=r"teacher output shape \(2, 7\) differs from the student's \(2, 10\)"):
        fit(create_model("lenet300"), cfg, *digits, teacher=create_model("lenet300", num_classes=7), quiet=True)


def test_batch_larger_than_data_is_refused(digits):
    with pytest.raises(ConfigError, match="exceeds"):
        fit(create_model("lenet300"), TrainConfig(epochs=1, batch_size=5000), *digits, quiet=True)


def test_resume_from_another_model_is_refused(digits, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=64, max_steps=3)
    fit(create_model("lenet300"), cfg, *digits, run_dir=tmp_path, quiet=True)
    with pytest.raises(CheckpointError, match="another model or recipe"):
        fit(create_model("lenet5"), cfg, *digits, run_dir=tmp_path, resume=True, quiet=True)
    other = cfg.model_copy(update={"lr": 0.5})
    with pytest.raises(CheckpointError, match="another model or recipe"):
        fit(create_model("lenet300"), other, *digits, run_dir=tmp_path, resume=True, quiet=True)
