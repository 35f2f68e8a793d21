"""Config classes of Deep Compression's methods (one per method; YAML recipe keys == fields).

Per-layer maps (``keep``, ``layer_bits``, ``layer_index_bits``) follow torchslim's one targeting
rule: exact layer name > ``re:<regex>`` > module type (``Linear``, ``Conv2d``) > the default;
``None`` leaves a layer alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from torchslim.config import StrictConfig
from torchslim.training.config import TrainConfig


class MagnitudePruningConfig(StrictConfig):
    """Deep Compression stage 1: magnitude pruning per layer with masked retraining.

    ``keep`` is the fraction of weights each layer keeps (the paper's Table 2/3 "Weights%").
    ``schedule="gradual"`` raises sparsity along Zhu & Gupta's cubic curve during the first
    ``prune_epochs``; ``"one-shot"`` prunes once. Then ``train`` fine-tunes with masks fixed.
    """

    keep: dict[str, float | None] = Field(default_factory=dict, description="layer/regex/type -> kept fraction")
    default_keep: float | None = Field(None, gt=0, le=1, description="kept fraction for layers keep does not name")
    schedule: Literal["gradual", "one-shot"] = "gradual"
    prune_epochs: int = Field(4, ge=0, description="epochs of the gradual schedule (sparsity rises, then holds)")
    prune_frequency: int = Field(20, ge=1, description="optimizer steps between mask updates (gradual)")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=8, lr=0.01, weight_decay=1e-4))

    @model_validator(mode="after")
    def _check(self) -> MagnitudePruningConfig:
        for k, v in self.keep.items():
            if v is not None and not 0 < v <= 1:
                raise ValueError(f"keep[{k!r}] = {v} must be in (0, 1]: the fraction of weights the layer keeps")
        if not self.keep and self.default_keep is None:
            raise ValueError("give keep (per layer) or default_keep, else nothing would be pruned")
        return self


class WeightSharingConfig(StrictConfig):
    """Deep Compression stage 2: a k-means codebook per layer (2**bits entries, entry 0 is zero).

    Every weight becomes a ``bits``-wide index into its layer's codebook. Centroids start
    linearly spaced over [min, max] (``init="linear"``, the paper's choice). Fine-tuning the
    model afterwards trains the centroids: each centroid's gradient is the sum of the gradients
    of the weights that share it, so use a learning rate ~1/50 of the usual one (e.g. 0.001
    with SGD). ``bias_bits`` shares biases the same way (``None``: float32).
    """

    bits: int = Field(5, ge=1, le=12, description="default codebook bits per weight")
    layer_bits: dict[str, int | None] = Field(default_factory=dict, description="layer/regex/type -> bits (None: skip)")
    bias_bits: int | None = Field(8, ge=1, le=12)
    init: Literal["linear", "density", "random"] = "linear"
    kmeans_iters: int = Field(50, ge=1)
    codebook_dtype: Literal["float16", "float32"] = "float16"

    @model_validator(mode="after")
    def _check(self) -> WeightSharingConfig:
        for k, v in self.layer_bits.items():
            if v is not None and not 1 <= v <= 12:
                raise ValueError(f"layer_bits[{k!r}] = {v} must be in 1..12")
        return self


class HuffmanCodingConfig(StrictConfig):
    """Deep Compression stage 3: store codebook indices and relative positions Huffman coded.

    Positions are gaps between non-zeros, ``index_bits`` wide (filler zeros bridge longer gaps).
    ``"auto"`` packs each layer with every width from 2 to 10 bits and keeps the smallest.
    ``huffman=False`` keeps fixed-width codes (the paper's "pruned + quantized" stage).
    """

    index_bits: int | Literal["auto"] = 5
    layer_index_bits: dict[str, int | Literal["auto"] | None] = Field(
        default_factory=dict, description="layer/regex/type -> index bits"
    )
    huffman: bool = True

    @model_validator(mode="after")
    def _check(self) -> HuffmanCodingConfig:
        for k, v in [("index_bits", self.index_bits), *self.layer_index_bits.items()]:
            if isinstance(v, int) and not 1 <= v <= 12:
                raise ValueError(f"index bits for {k!r} = {v} must be in 1..12 (or 'auto')")
        return self


class DeepCompressionConfig(StrictConfig):
    """The three stages of Han, Mao & Dally (ICLR 2016) in one method.

    ``share_train`` fine-tunes the shared centroids (``None`` skips it); ``prune=None`` starts
    from the model's existing zeros.
    """

    dataset: str = "fashion-mnist"
    prune: MagnitudePruningConfig | None = None
    share: WeightSharingConfig = Field(default_factory=WeightSharingConfig)
    share_train: TrainConfig | None = Field(default_factory=lambda: TrainConfig(epochs=4, lr=0.001, weight_decay=0.0))
    code: HuffmanCodingConfig = Field(default_factory=HuffmanCodingConfig)
