"""The E-SSL prediction objective (Dangovski et al. 2022, §3; reference/paper.md §2.2):

    L_pred = CE( h(f(g·x)), g ),   summed into the total as  L = L_ssl + λ·L_pred,

where ``x`` is the prediction-branch view (a small crop), every element ``g`` of the group is applied to every
image (:meth:`TransformationGroup.orbit`), ``f`` is the backbone (gradients flow into it) and ``h`` the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prediction_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the predicted group element and the accuracy (detached)."""
    logits = logits.float()
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.detach().argmax(1) == labels).float().mean()
    return loss, accuracy
