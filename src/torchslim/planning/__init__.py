"""Planning: what a model allows (``inspect``), how much each layer can take (``sensitivity``),
and the best mix of pruning and quantization under an accuracy budget (``plan``).

This package sits above the recipes (a plan is a recipe it writes and runs) and below the CLI.
"""
