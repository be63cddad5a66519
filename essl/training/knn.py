"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018, InstDisc; the kNN monitor of the
official E-SSL code, rdangovs/essl ``cifar10/main.py``): cosine similarity on L2-normalised features, the top-k neighbours
vote with weight exp(sim / t); k = 200, t = 0.1."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores ``(N_test, num_classes)``; ``argmax`` is the prediction."""
    bank = F.normalize(train_features.float(), dim=1)
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(test_features), chunk):
        q = F.normalize(test_features[start : start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / t).exp()
        one_hot = F.one_hot(train_labels[idx], num_classes).float()
        scores.append((one_hot * weights.unsqueeze(-1)).sum(1))
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
) -> float:
    """Top-1 accuracy (in %) of :func:`knn_predict`."""
    pred = knn_predict(train_features, train_labels, test_features, num_classes, k, t).argmax(1)
    return 100.0 * (pred == test_labels).float().mean().item()
