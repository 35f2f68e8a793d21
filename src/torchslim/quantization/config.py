"""One config class per quantization method; ``quantize(model, config)`` dispatches on the class
through the method registry (:mod:`torchslim.methods`; the entries are in this package's ``__init__``).

The fields are the YAML recipe keys (``extra="forbid"`` turns a typo into an error) and a wrong
value raises :class:`~torchslim.errors.ConfigError` naming the field, before any work starts.

>>> StaticInt8Config(observer="percentile").per_channel
True
>>> WeightOnlyConfig(bits=3)
Traceback (most recent call last):
...
torchslim.errors.ConfigError: WeightOnlyConfig: bits: Input should be 4 or 8 (got 3)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from torchslim.config import StrictConfig
from torchslim.errors import ConfigError
from torchslim.training.config import TrainConfig

Observer = Literal["minmax", "moving_average", "percentile", "mse", "kl", "auto"]


class QuantConfig(StrictConfig):
    """Base of every quantization config. Not used directly."""

    method: ClassVar[str] = ""


class FP16Config(QuantConfig):
    """Cast every floating-point weight and buffer to float16 (inputs are cast on the way in).

    >>> import torch.nn as nn
    >>> from torchslim.quantization import quantize
    >>> m, report = quantize(nn.Linear(4, 2), FP16Config())
    >>> m.weight.dtype
    torch.float16
    """

    method: ClassVar[str] = "fp16"


class BF16Config(QuantConfig):
    """Cast every floating-point weight and buffer to bfloat16 (inputs are cast on the way in)."""

    method: ClassVar[str] = "bf16"


class DynamicInt8Config(QuantConfig):
    """torchslim's dynamic INT8 for ``nn.Linear``: per-channel INT8 weights, activations
    quantized at run time per token (or per tensor), oneDNN integer GEMM. No calibration.

    >>> DynamicInt8Config().activation
    'per_token'
    """

    method: ClassVar[str] = "int8_dynamic"
    activation: Literal["per_token", "per_tensor"] = "per_token"


class SeedDynamicConfig(QuantConfig):
    """The seed article's exact call, kept as a compatibility path and benchmark baseline:
    ``torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``.

    ``torch.ao.quantization`` is deprecated; its warning is caught and put in the report.
    ``targets`` are not supported (the call quantizes every Linear).
    """

    method: ClassVar[str] = "seed_dynamic"


class StaticInt8Config(QuantConfig):
    """Post-training static INT8 of ``Conv2d``/``Linear`` layers with calibration data.

    * ``observer``: how each activation's range is chosen from calibration data: ``minmax``,
      ``moving_average`` (min/max, exponential average over batches), ``percentile``, ``mse``
      (clipping that minimises squared error), ``kl`` (entropy calibration over a histogram),
      or ``auto`` (per activation, the observer whose choice gives the lowest error of the
      model's output on calibration samples).
    * ``per_channel``: one weight scale per output channel (else one per layer).
    * ``symmetric``: activation ranges symmetric around 0 (else the affine formula with a zero
      point). Weights are always symmetric: oneDNN's x86 integer kernels take no weight zero point.
    * ``reduce_range``: CPUs without AVX-512 VNNI add pairs of u8 x s8 products in 16 bits, which
      overflows for 8-bit activations times 8-bit weights. ``"weights"`` keeps weights in
      [-64, 63] (7 bits), ``"activations"`` keeps activations in [0, 127]; ``"none"`` (8 bits
      each) is correct only on VNNI CPUs. ``"auto"`` (default): ``"none"`` on a CPU with VNNI
      (about half the output error of 7-bit weights), else ``"weights"``. A checkpoint with 8-bit
      weights and activations loaded on a CPU without VNNI gets 7-bit weights there, with a
      warning (:mod:`torchslim.quantization.codecs`), never saturated sums.
    * ``fold_bn``: fold each BatchNorm into the convolution before it.

    >>> StaticInt8Config(observer="auto", per_channel=False).observer
    'auto'
    """

    method: ClassVar[str] = "int8_static"
    observer: Observer = "minmax"
    per_channel: bool = True
    symmetric: bool = False
    weight_bits: int = Field(8, ge=2, le=8, description="bits of the weights (signed)")
    activation_bits: int = Field(8, ge=2, le=8, description="bits of the activations (unsigned with zero point)")
    reduce_range: Literal["auto", "weights", "activations", "none"] = "auto"
    fold_bn: bool = True
    percentile: float = Field(99.99, gt=50.0, le=100.0, description="percentile observer's upper percentile")
    max_calib_samples: int = Field(512, ge=1, description="calibration samples used (the first ones given)")
    batch_size: int = Field(128, ge=1, description="calibration batch size")
    auto_samples: int = Field(256, ge=1, description="samples on which `auto` compares observers")


class WeightOnlyConfig(QuantConfig):
    """Weight-only INT8 or INT4 for ``nn.Linear``, asymmetric, group-wise, INT4 packed two per byte.

    >>> WeightOnlyConfig(bits=4, group_size=32).group_size
    32
    """

    method: ClassVar[str] = "weight_only"
    bits: Literal[4, 8] = 4
    group_size: Literal[32, 64, 128] = 32


class GPTQConfig(QuantConfig):
    """Weight-only INT4/INT8 of ``nn.Linear`` with GPTQ error compensation (calibrated): group-wise,
    asymmetric, stored like :class:`WeightOnlyConfig`'s layers. Transformer blocks are quantized
    one after the other (each from the already quantized ones' outputs); a model without a list of
    blocks is calibrated in one pass.

    >>> GPTQConfig().bits, GPTQConfig().group_size
    (4, 32)
    """

    method: ClassVar[str] = "gptq"

    bits: Literal[4, 8] = 4
    group_size: int = Field(32, ge=8)
    damp: float = Field(0.01, gt=0, le=1, description="fraction of mean(diag H) added to the diagonal")
    block_size: int = Field(128, ge=8, description="columns updated together (a multiple of group_size)")
    act_order: bool = Field(False, description="quantize columns in order of decreasing Hessian diagonal")
    max_calib_samples: int = Field(512, ge=1, description="calibration samples used (the first ones given)")

    def model_post_init(self, _: Any) -> None:
        if self.block_size % self.group_size:
            raise ConfigError(f"GPTQConfig: block_size ({self.block_size}) must be a multiple of group_size ({self.group_size})")


class SmoothQuantConfig(QuantConfig):
    """INT8 weights and activations for every ``nn.Linear`` of any model (made for transformers):
    SmoothQuant migration, GPTQ-rounded per-channel weights, per-token / per-tensor / static
    activations, the most sensitive layers kept in float. See :mod:`torchslim.quantization.smoothquant`.

    >>> SmoothQuantConfig().activation
    'per_token'
    """

    method: ClassVar[str] = "int8_smoothquant"

    smoothquant_alpha: float | None = Field(0.5, ge=0.0, le=1.0, description="migration strength; None: no smoothing")
    activation: Literal["per_token", "per_tensor", "static"] = "per_token"
    observer: Literal["minmax", "percentile", "mse", "auto"] = Field(
        "auto", description="static only: how a layer's input range is chosen; auto = least output error per layer"
    )
    weight_bits: Literal["auto", 7, 8] = Field(
        "auto", description="auto: 8 with AVX-512 VNNI, else 7, which keeps u8 x s8 pair sums inside int16 (vpmaddubsw saturates)"
    )
    weight_rounding: Literal["nearest", "gptq"] = Field("gptq", description="gptq: compensate rounding with calibration inputs")
    keep_float: int = Field(0, ge=0, description="keep this many most sensitive Linear layers in float")
    max_calib_samples: int = Field(512, ge=1, description="calibration samples used (the first ones given)")


class QATConfig(QuantConfig):
    """Quantization-aware training, then conversion to the real integer model.

    Fake quantization (straight-through estimator) of weights (``weight_bits``, symmetric,
    per channel) and activations (``activation_bits``) at exactly the points the static INT8
    model quantizes; ranges start from calibration (``observer``); ``learn_scales`` makes the
    activation ranges trainable (LSQ, Esser et al. 2020). Trained with :func:`torchslim.fit`,
    then converted like :class:`StaticInt8Config`.

    >>> QATConfig(weight_bits=4).train.epochs
    2
    """

    method: ClassVar[str] = "qat"
    weight_bits: int = Field(8, ge=2, le=8)
    activation_bits: int = Field(8, ge=2, le=8)
    per_channel: bool = True
    symmetric: bool = False
    reduce_range: Literal["auto", "weights", "activations", "none"] = "auto"
    observer: Literal["minmax", "moving_average", "percentile", "mse", "kl"] = "minmax"
    learn_scales: bool = False
    fold_bn: bool = True
    max_calib_samples: int = Field(512, ge=1)
    batch_size: int = Field(128, ge=1)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=2, lr=0.005, warmup_epochs=0.0, augment=False))

