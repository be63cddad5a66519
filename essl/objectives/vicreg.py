"""VICReg loss (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization", Eq. 1-6).

For embeddings ``Z``, ``Z'`` of ``N`` images in ``d`` dimensions:

- invariance ``s(Z, Z') = (1/N) Σ_i ‖z_i − z'_i‖² / d`` (mean squared error);
- variance ``v(Z) = (1/d) Σ_j max(0, γ − sqrt(Var(z^j) + ε))`` with γ = 1, ε = 1e-4 and the unbiased variance;
- covariance ``c(Z) = (1/d) Σ_{i≠j} C(Z)_ij²`` with ``C(Z) = (Z − Z̄)ᵀ(Z − Z̄) / (N − 1)``;

    L = λ·s(Z, Z') + μ·[v(Z) + v(Z')] + ν·[c(Z) + c(Z')],    λ = μ = 25, ν = 1   (Eq. 6).

(The official ``main_vicreg.py`` halves the variance term; essl follows the paper's equation, as solo-learn.)
Variance and covariance are batch statistics: the embeddings of all ranks are gathered
(:func:`essl.objectives.distributed.gather`) and every rank computes the loss of the global batch, so with DDP the
loss and, after DDP's averaging, the gradients are those of one process holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from essl.objectives.distributed import gather


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """``v(Z)``: hinge on the standard deviation of every dimension over the batch."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """``c(Z)``: squared off-diagonal covariances, divided by the dimension."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three unweighted terms on the global batch: invariance, variance (both views), covariance (both)."""
    z1, z2 = gather(z1.float()), gather(z2.float())
    return {
        "invariance": F.mse_loss(z1, z2),
        "variance": variance_term(z1) + variance_term(z2),
        "covariance": covariance_term(z1) + covariance_term(z2),
    }


def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0
) -> torch.Tensor:
    t = vicreg_terms(z1, z2)
    return sim_weight * t["invariance"] + var_weight * t["variance"] + cov_weight * t["covariance"]


class VICRegLoss(nn.Module):
    def __init__(self, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0):
        super().__init__()
        self.weights = (sim_weight, var_weight, cov_weight)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return vicreg_loss(z1, z2, *self.weights)
