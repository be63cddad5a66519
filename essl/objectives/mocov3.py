"""MoCo v3 loss (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
Algorithm 1).

Queries ``q`` come from the online network (backbone, projector, predictor), keys ``k`` from the momentum
network (backbone, projector); every other image's key in the *global* batch is a negative:

    ctr(q, k) = 2τ · CE(q̄ k̄_allᵀ / τ, i),        L = ctr(q1, sg(k2)) + ctr(q2, sg(k1)),

with τ = 0.2 in solo-learn's CIFAR setting (1.0 is the default of the official ``main_moco.py``). The factor 2τ
is the paper's (it makes the gradient scale independent of τ). Keys are gathered from all ranks
(:func:`essl.objectives.simclr.cross_view_ce`), so with DDP the loss is the single-process one on the global batch.
"""

from __future__ import annotations

import torch
from torch import nn

from essl.objectives.simclr import cross_view_ce


def mocov3_loss(
    q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """Symmetrised MoCo v3 contrastive loss; ``k1``, ``k2`` (momentum-network projections) are detached."""
    return 2 * temperature * (cross_view_ce(q1, k2.detach(), temperature) + cross_view_ce(q2, k1.detach(), temperature))


class MoCoV3Loss(nn.Module):
    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
        return mocov3_loss(q1, q2, k1, k2, self.temperature)
