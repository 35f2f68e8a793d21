"""Top-1 accuracy and embedding fidelity."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchslim.data.datasets import ImageData


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Class predictions of ``model`` (put in eval mode) over ``images``, batched."""
    model.eval()
    out = [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def accuracy(model: nn.Module, data: ImageData, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent.

    >>> from torchslim.models import create_model
    >>> from torchslim.data import load_dataset
    >>> 0.0 <= accuracy(create_model("lenet300"), load_dataset("digits", "test")) <= 100.0
    True
    """
    pred = predict(model, data.images, batch_size)
    return 100.0 * float((pred == data.labels).float().mean())


def embedding_fidelity(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Mean/min cosine similarity of paired embeddings and top-1 nearest-neighbour agreement.

    Agreement: for each sentence, is its nearest other sentence (cosine) the same under both?

    >>> r = torch.randn(50, 8)
    >>> embedding_fidelity(r, r)["nn_agreement"]
    1.0
    """
    r = torch.nn.functional.normalize(reference.float(), dim=1)
    c = torch.nn.functional.normalize(candidate.float(), dim=1)
    cos = (r * c).sum(1)
    sim_r, sim_c = r @ r.T, c @ c.T
    sim_r.fill_diagonal_(-2.0)
    sim_c.fill_diagonal_(-2.0)
    agree = (sim_r.argmax(1) == sim_c.argmax(1)).float().mean()
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "nn_agreement": float(agree)}
