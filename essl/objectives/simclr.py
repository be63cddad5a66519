"""Contrastive losses of SimCLR (Chen et al. 2020) in the two forms used by E-SSL.

- :func:`info_nce`: the **cross-view** InfoNCE of the paper's CIFAR and ImageNet code (rdangovs/essl
  ``cifar10/main.py``, ``imagenet/simclr/main.py``). With ``u = normalize(z1)``, ``v = normalize(z2)`` over a
  batch of ``N`` pairs,

      L = ½·CE(u vᵀ/τ, I) + ½·CE(v uᵀ/τ, I),

  i.e. each anchor's positive is its other view and its negatives are the other ``N-1`` images' other views.
  τ = 0.5 on CIFAR-10, 0.2 on ImageNet.
- :func:`nt_xent`: the full NT-Xent of SimCLR with ``2N-2`` negatives (own view included), mean over the ``2N``
  anchors; the photonics experiment uses it with τ = 0.1.

Both gather the other ranks' embeddings (:func:`essl.objectives.distributed.gather`), so under DDP the maths
is the single-process maths on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from essl.objectives.distributed import gather, rank


def cross_view_ce(anchors: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """``CE(u k_allᵀ/τ, i)`` with ``u``, ``k`` L2-normalised: anchor ``i``'s positive is key ``i`` of the global batch
    and the other ranks' keys are gathered as negatives. The common core of :func:`info_nce` and MoCo v3."""
    u, k_all = F.normalize(anchors.float(), dim=1), gather(F.normalize(keys.float(), dim=1))
    targets = torch.arange(u.shape[0], device=u.device) + rank() * u.shape[0]
    return F.cross_entropy(u @ k_all.T / temperature, targets)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Symmetric cross-view InfoNCE (see module docstring); ``z1``, ``z2``: ``(N, D)`` local embeddings."""
    return 0.5 * (cross_view_ce(z1, z2, temperature) + cross_view_ce(z2, z1, temperature))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over ``2N`` anchors with ``2N-2`` negatives each (the anchor itself is excluded)."""
    u, v = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    n, offset = u.shape[0], rank() * u.shape[0]
    u_all, v_all = gather(u), gather(v)
    n_all = u_all.shape[0]
    keys = torch.cat([u_all, v_all])  # (2N_all, D): all first views, then all second views
    anchors = torch.cat([u, v])  # (2n, D)
    logits = anchors @ keys.T / temperature
    local = torch.arange(n, device=u.device) + offset
    self_index = torch.cat([local, local + n_all])  # the anchor's own column
    positive = torch.cat([local + n_all, local])  # its other view
    logits[torch.arange(2 * n, device=u.device), self_index] = float("-inf")
    return F.cross_entropy(logits, positive)


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (``nt_xent=True`` selects :func:`nt_xent`)."""

    def __init__(self, temperature: float = 0.5, full_nt_xent: bool = False):
        super().__init__()
        self.temperature, self.full_nt_xent = temperature, full_nt_xent

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        fn = nt_xent if self.full_nt_xent else info_nce
        return fn(z1, z2, self.temperature)
