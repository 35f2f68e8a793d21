"""Deep Compression (Han, Mao & Dally, ICLR 2016): prune, share weights, Huffman code.

* :func:`magnitude_prune`: per-layer magnitude masks with masked retraining (gradual or one-shot).
* :func:`share_weights`: a k-means codebook per layer; fine-tuning trains the centroids.
* :func:`huffman_code`: relative sparse indices + Huffman codes, stored in a torchslim checkpoint
  that reloads into an ``nn.Module`` with identical predictions.
* :func:`deep_compress`: the three stages in one call; :func:`bits_table` gives the paper's
  Table 2/3 rows (bits per weight and per index, per layer).
"""

from torchslim.compression.coded import CodedConv2d, CodedLinear, bits_table, huffman_code
from torchslim.compression.config import (
    DeepCompressionConfig,
    HuffmanCodingConfig,
    MagnitudePruningConfig,
    WeightSharingConfig,
)
from torchslim.compression.kmeans import kmeans_1d
from torchslim.compression.magnitude import GradualMagnitude, magnitude_prune
from torchslim.compression.pipeline import DeepCompressionResult, Stage, deep_compress, saved_bytes
from torchslim.compression.shared import SharedConv2d, SharedLinear, round_codebooks, share_weights

__all__ = [
    "CodedConv2d", "CodedLinear", "DeepCompressionConfig", "DeepCompressionResult", "GradualMagnitude",
    "HuffmanCodingConfig", "MagnitudePruningConfig", "SharedConv2d", "SharedLinear", "Stage", "WeightSharingConfig",
    "bits_table", "deep_compress", "huffman_code", "kmeans_1d", "magnitude_prune", "round_codebooks", "saved_bytes",
    "share_weights",
]  # fmt: skip
