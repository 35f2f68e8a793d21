"""Real data sets, offline: Fashion-MNIST (gz IDX files) and scikit-learn's digits."""

from torchslim.data.datasets import ImageData, augment, dataset_names, load_dataset, make_loader

__all__ = ["ImageData", "augment", "dataset_names", "load_dataset", "make_loader"]
