"""Barlow Twins loss (Zbontar et al. 2021, Eq. 1).

Each embedding dimension is standardised over the batch (BatchNorm without affine, biased variance), the
cross-correlation ``C = z̃1ᵀ z̃2 / N`` is formed, and

    L = Σ_i (1 - C_ii)² + λ·Σ_{i≠j} C_ij²,   λ = 0.0051.

The batch statistics and ``C`` are summed over ranks (:func:`all_reduce_sum`), so with DDP the loss and its
gradient are those of one process holding the whole batch (the official code needs SyncBatchNorm for this).
"""

from __future__ import annotations

import torch
from torch import nn

from essl.objectives.distributed import all_reduce_sum


def _standardise(z: torch.Tensor, n_total: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = all_reduce_sum(z.sum(0)) / n_total
    var = all_reduce_sum(((z - mean) ** 2).sum(0)) / n_total
    return (z - mean) / torch.sqrt(var + eps)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> torch.Tensor:
    z1, z2 = z1.float(), z2.float()
    n_total = all_reduce_sum(torch.tensor(float(z1.shape[0]), device=z1.device))
    c = all_reduce_sum(_standardise(z1, n_total).T @ _standardise(z2, n_total)) / n_total
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


class BarlowTwinsLoss(nn.Module):
    def __init__(self, lambd: float = 0.0051):
        super().__init__()
        self.lambd = lambd

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return barlow_twins_loss(z1, z2, self.lambd)
