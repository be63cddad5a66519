"""SimSiam loss (Chen & He 2021, Eq. 2): symmetric negative cosine similarity with a stop-gradient on z,

    L = ½·D(p1, sg(z2)) + ½·D(p2, sg(z1)),   D(p, z) = -mean_i cos(p_i, z_i).

Per-sample terms only, so the mean over local samples, averaged over ranks by DDP, is the global-batch loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``-mean cos(p, stopgrad(z))``."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


class SimSiamLoss(nn.Module):
    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return simsiam_loss(p1, p2, z1, z2)
