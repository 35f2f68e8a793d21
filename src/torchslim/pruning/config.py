"""One config class per pruning method; ``prune(model, config)`` dispatches on the class.

The fields are the YAML recipe keys (``extra="forbid"`` turns a typo into an error), and a wrong
value raises :class:`~torchslim.errors.ConfigError` (not pydantic's error) naming the field.

``amount`` follows ``torch.nn.utils.prune``: a float in [0, 1) is the fraction of weights that are
zero afterwards, an int is a count of weights to remove.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from torchslim.config import StrictConfig
from torchslim.methods import method_named
from torchslim.training.config import TrainConfig

Amount = float | int


class PruneConfig(StrictConfig):
    """Base of every pruning config. Not used directly."""

    method: ClassVar[str] = ""
    input_shape: list[int] | None = Field(
        None, description="shape of one input without the batch dim, for MACs and tracing when no calib_data is given"
    )


def _check_amount(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("amount must be a number, not a bool")
    if not isinstance(v, int | float):
        raise ValueError("amount must be a float in [0, 1) or an integer count")
    if isinstance(v, int):
        if v < 0:
            raise ValueError("an integer amount counts weights to remove and must be >= 0")
    elif not 0.0 <= float(v) < 1.0:
        raise ValueError("amount must be in [0, 1) (the fraction of weights to remove) or an integer count")
    return v


class _Unstructured(PruneConfig):
    amount: Amount = Field(..., description="fraction in [0, 1) of weights set to zero, or an integer count")
    parameter: str = Field("weight", description="name of the parameter pruned in each targeted layer")

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> Any:
        return _check_amount(v)


class MagnitudeConfig(_Unstructured):
    """Unstructured magnitude (L1) pruning: zero the weights of smallest |w|.

    ``scope="layer"`` removes ``amount`` of each layer; ``"global"`` ranks all targeted weights
    together (``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``).

    >>> MagnitudeConfig(amount=0.9, scope="global").scope
    'global'
    """

    method: ClassVar[str] = "magnitude"
    scope: Literal["layer", "global"] = "layer"


class RandomConfig(_Unstructured):
    """Unstructured random pruning: a control that any real criterion must beat."""

    method: ClassVar[str] = "random"
    scope: Literal["layer", "global"] = "layer"
    seed: int = 0


class WandaConfig(_Unstructured):
    """Activation-aware pruning, Wanda (Sun et al., 2023): score = |w| * ||x||_2 of its input.

    ``||x||`` is the L2 norm of each input feature (input channel for convolutions) over the
    calibration data; tokens a batch's ``attention_mask`` marks as padding are left out. As in
    the paper, weights compete within each output row (``per_output``). ``pattern="2:4"`` (or
    ``"4:8"``) keeps the two best-scored weights of every four consecutive inputs instead, as
    :class:`NMConfig` does by magnitude; ``amount`` then follows from the pattern.

    >>> WandaConfig(pattern="2:4").amount
    0.5
    """

    method: ClassVar[str] = "wanda"
    amount: Amount = Field(0.5, description="fraction in [0, 1) of each row's weights set to zero (unstructured)")
    pattern: Literal["unstructured", "2:4", "4:8"] = "unstructured"
    per_output: bool = True
    calib_samples: int = Field(512, ge=1)
    batch_size: int = Field(128, ge=1)

    @property
    def n_m(self) -> tuple[int, int] | None:
        """``(n, m)`` of an N:M pattern, else None."""
        if self.pattern == "unstructured":
            return None
        n, m = self.pattern.split(":")
        return int(n), int(m)

    @model_validator(mode="after")
    def _pattern_amount(self) -> WandaConfig:
        nm = self.n_m
        if nm is not None and "amount" in self.model_fields_set and self.amount != 1 - nm[0] / nm[1]:
            raise ValueError(f"pattern {self.pattern} zeroes {1 - nm[0] / nm[1]:g} of the weights; leave amount out")
        return self


class TaylorConfig(_Unstructured):
    """First-order Taylor pruning (Molchanov et al., 2019): score = sum over batches of (w * dL/dw)^2.

    Needs labelled calibration data (an ImageData or ``(x, y)`` batches).
    """

    method: ClassVar[str] = "taylor"
    scope: Literal["layer", "global"] = "layer"
    calib_samples: int = Field(512, ge=1)
    batch_size: int = Field(128, ge=1)


class NMConfig(PruneConfig):
    """N:M semi-structured sparsity: in every group of ``m`` consecutive input weights keep ``n``.

    2:4 is what sparse tensor cores accelerate. Groups run along the input features of a Linear
    and along the input channels of a convolution (channels-last, as NVIDIA's ASP does); a layer
    whose input channels are not a multiple of ``m`` is skipped and reported.

    >>> NMConfig(n=2, m=4).sparsity
    0.5
    """

    method: ClassVar[str] = "nm"
    n: int = Field(2, ge=1, description="weights kept per group")
    m: int = Field(4, ge=2, description="group size")
    parameter: str = "weight"

    @model_validator(mode="after")
    def _check(self) -> NMConfig:
        if self.n >= self.m:
            raise ValueError(f"n ({self.n}) must be smaller than m ({self.m}): n weights are kept in every m")
        return self

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m


class StructuredConfig(PruneConfig):
    """Structured channel/filter pruning that physically removes channels (Torch-Pruning's graph).

    Removing output channels of a layer also removes the matching BatchNorm entries, the input
    channels of every consumer, and keeps residual additions, concatenations and depthwise
    convolutions consistent. ``ratio`` is the fraction of channels removed per coupled group
    (``scope="layer"``) or over all groups (``scope="global"``, capped at ``max_layer_ratio``).

    >>> StructuredConfig(ratio=0.3, importance="l2", round_to=8).round_to
    8
    """

    method: ClassVar[str] = "structured"
    ratio: float = Field(..., ge=0.0, lt=1.0, description="fraction of channels removed")
    importance: Literal["l1", "l2", "taylor", "bn_scale", "random"] = "l1"
    scope: Literal["layer", "global"] = "layer"
    round_to: int | None = Field(None, ge=1, description="keep channel counts at a multiple of this (e.g. 8)")
    max_layer_ratio: float = Field(0.9, gt=0.0, lt=1.0, description="global scope: most any group may lose")
    calib_samples: int = Field(256, ge=1, description="samples for taylor importance")


class HeadPruningConfig(StrictConfig):
    """Remove whole attention heads and FFN neurons of a transformer encoder.

    >>> HeadPruningConfig(head_fraction=0.25).ffn_fraction
    0.0
    """

    method: ClassVar[str] = "prune_heads"

    head_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of heads removed in every layer")
    ffn_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of FFN neurons removed in every layer")


class GradualConfig(StrictConfig):
    """Zhu & Gupta's (2017) gradual magnitude pruning schedule, applied during fine-tuning.

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3 for t0 <= t <= t0 + n*dt, updated every
    ``frequency`` (dt) optimizer steps; ``n = n_prunes``. Per-layer final sparsities come from
    ``targets`` (floats), e.g. Deep Compression's ratios.

    >>> GradualConfig(final_sparsity=0.9, begin_step=0, n_prunes=10, frequency=100).end_step
    1000
    """

    method: ClassVar[str] = "gradual"
    final_sparsity: float = Field(..., ge=0.0, lt=1.0)
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    begin_step: int = Field(0, ge=0, description="t0: first pruning step")
    n_prunes: int = Field(10, ge=1, description="n: number of pruning updates")
    frequency: int = Field(100, ge=1, description="dt: optimizer steps between updates")
    scope: Literal["layer", "global"] = "layer"
    parameter: str = "weight"
    train: TrainConfig = Field(default_factory=TrainConfig, description="the fine-tuning run the schedule rides on")

    @model_validator(mode="after")
    def _check(self) -> GradualConfig:
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity {self.initial_sparsity} exceeds final_sparsity {self.final_sparsity}")
        return self

    @property
    def end_step(self) -> int:
        return self.begin_step + self.n_prunes * self.frequency


class IterativeConfig(StrictConfig):
    """Iterative pruning (Han et al., 2015): prune, fine-tune, prune more, ``rounds`` times.

    Round r (1-based) prunes to sparsity 1 - (1 - final)^(r / rounds), so each round removes the
    same fraction of the weights still alive.
    """

    method: ClassVar[str] = "iterative"
    final_sparsity: float = Field(..., ge=0.0, lt=1.0)
    rounds: int = Field(3, ge=1)
    scope: Literal["layer", "global"] = "layer"
    parameter: str = "weight"
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=2))

    def sparsity_at(self, r: int) -> float:
        return 1.0 - (1.0 - self.final_sparsity) ** (r / self.rounds)


def config_from_dict(spec: dict[str, Any]) -> BaseModel:
    """Build a config from ``{"type": <method>, ...fields}`` (a recipe step); the names are the
    registered pruning methods (:mod:`torchslim.methods`).

    >>> config_from_dict({"type": "nm", "n": 1, "m": 4}).sparsity
    0.75
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    cls = method_named(str(kind), "prune").config_cls
    return cls(**spec)  # type: ignore[no-any-return]
