"""BYOL loss (Grill et al. 2020, "Bootstrap your own latent", Eq. 2 and §3.1).

The online network's prediction ``p`` of one view regresses the target (momentum) network's projection ``t`` of
the other view, both L2-normalised:

    L(p, t) = ‖p̄ − t̄‖² = 2 − 2·cos(p, t),        L_BYOL = L(p1, sg(t2)) + L(p2, sg(t1)),

averaged over the batch (the paper symmetrises by feeding the views the other way round and adds the two
terms). The target is never differentiated (stop-gradient); it follows the online network by the exponential
moving average of :mod:`essl.models.momentum`. Per-sample terms only, so the local mean, averaged over ranks by
DDP, is the global-batch loss.
"""

from __future__ import annotations

import torch
from torch import nn

from essl.objectives.simsiam import negative_cosine


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """``(2 − 2 cos(p1, t2)) + (2 − 2 cos(p2, t1))``, batch means; ``t1``, ``t2`` are detached."""
    return 4.0 + 2.0 * (negative_cosine(p1, t2) + negative_cosine(p2, t1))


class BYOLLoss(nn.Module):
    def forward(self, p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        return byol_loss(p1, p2, t1, t2)
