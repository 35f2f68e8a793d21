"""Configs of the one training loop (baseline training and every fine-tuning share it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from torchslim.config import StrictConfig

# Bounds that no real run reaches; beyond them a typo (an extra zero) would run for ever or
# allocate a batch the machine cannot hold.
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_STEPS = 10**9


class DistillConfig(StrictConfig):
    """Knowledge distillation from the uncompressed teacher (Hinton et al., 2015).

    loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
           + feature_weight * sum MSE(student[layer], teacher[layer]) over ``features``.

    With ``loss="mse"`` the second term is ``alpha * MSE(s, t)`` on the raw outputs (for models
    whose output is not class logits).
    """

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    features: list[str] = Field(default_factory=list, description="layer names matched between student and teacher")
    feature_weight: float = Field(1.0, ge=0)
    loss: Literal["kl", "mse"] = Field("kl", description="kl: softened class probabilities; mse: raw outputs (embeddings, regression)")


class TrainConfig(StrictConfig):
    """Hyper-parameters of one training / fine-tuning run. ``batch_size`` is the global batch."""

    epochs: int = Field(10, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = Field(10, ge=1, description="epochs between decays (schedule=step)")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: bool = True
    seed: int = Field(0, ge=0, le=2**63 - 1, description="torch / numpy seed (0 to 2**63 - 1)")
    early_stopping_patience: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="epochs without val gain before stopping")
    checkpoint_every_steps: int = Field(200, ge=1, le=MAX_STEPS, description="resumable checkpoint interval (steps)")
    distill: DistillConfig | None = None
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="stop after this many optimizer steps (smoke runs)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_epochs > self.epochs and self.epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        return self
