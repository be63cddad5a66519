"""Barlow Twins loss (Zbontar et al. 2021, Eq. 1).

Each embedding dimension is standardised over the batch (BatchNorm without affine, biased variance), the
cross-correlation ``C = z̃1ᵀ z̃2 / N`` is formed, and

    L = Σ_i (1 - C_ii)² + λ·Σ_{i≠j} C_ij²,   λ = 0.0051.

The batch statistics and ``C`` are summed over ranks with a differentiable all-reduce (:func:`all_reduce_sum`),
so with DDP the loss *and its gradient* are those of one process holding the whole batch.

The official code does not do this: ``imagenet/barlowtwins/main.py`` (rdangovs/essl, as facebookresearch/
barlowtwins) sums ``C`` with ``torch.distributed.all_reduce``, which autograd does not see. Each process then
back-propagates the global loss through its own share of ``C`` only, and DDP *averages* those gradients over the
W processes: the Barlow Twins gradient is the exact one divided by W (the loss value is the same), while a
per-process mean loss such as the E-SSL rotation term keeps its exact gradient. The paper's E-Barlow Twins
(λ = 8, 32 GPUs) therefore weighted the rotation term 32× more, relative to the Barlow Twins term, than the
same λ does with an exact gradient. :func:`scale_gradient` with ``1 / W`` reproduces that on any number of
processes (``barlow_official_gpus: W``; preset ``imagenet-ebarlow-official``).
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


def scale_gradient(loss: torch.Tensor, factor: float) -> torch.Tensor:
    """``loss`` unchanged in value, with its gradient multiplied by ``factor`` (the official code's Barlow Twins
    gradient on W processes is the exact one with ``factor = 1 / W``; see the module docstring)."""
    return loss.detach() + (loss - loss.detach()) * factor


class BarlowTwinsLoss(nn.Module):
    def __init__(self, lambd: float = 0.0051):
        super().__init__()
        self.lambd = lambd

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return barlow_twins_loss(z1, z2, self.lambd)
