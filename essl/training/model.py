"""The E-SSL model: backbone f, projector g, optional predictor q (SimSiam, BYOL, MoCo v3), a momentum target
network (BYOL, MoCo v3: EMA copies of f and g), and one prediction head per group.

:meth:`ESSLModel.forward` computes the whole objective in one call (so DDP sees one forward per backward):

    L = L_ssl(view1, view2) + Σ_groups λ_G · CE(h_G(f(g·x_small)), g)        (Dangovski et al. 2022, §3)

The prediction term uses the online backbone f for every base method, so E-BYOL, E-VICReg and E-MoCo v3 are
the base objective plus the same term. The training loop calls :meth:`ESSLModel.update_target` after each
optimiser step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from essl.groups import make_group
from essl.models import (
    ema_update,
    feature_dim,
    frozen_copy,
    make_backbone,
    method_predictor,
    prediction_head,
    projector,
    projector_dim,
)
from essl.objectives import (
    barlow_twins_loss,
    byol_loss,
    info_nce,
    mocov3_loss,
    nt_xent,
    prediction_loss,
    scale_gradient,
    simsiam_loss,
    vicreg_loss,
)
from essl.objectives.equivariance import head_outputs, relative_features
from essl.training.config import MOMENTUM_METHODS, PretrainConfig


class ESSLModel(nn.Module):
    def __init__(self, cfg: PretrainConfig, in_channels: int):
        super().__init__()
        self.method, self.temperature = cfg.method, cfg.temperature
        self.full_nt_xent, self.barlow_lambda = cfg.full_nt_xent, cfg.barlow_lambda
        self.vicreg_weights = (cfg.vicreg_sim, cfg.vicreg_var, cfg.vicreg_cov)
        self.barlow_official_gpus = cfg.barlow_official_gpus
        self.backbone = make_backbone(cfg.backbone, in_channels)
        dim = feature_dim(self.backbone)
        self.projector = projector(cfg.projector, dim)
        self.predictor = method_predictor(cfg.method, projector_dim(self.projector), cfg.predictor_hidden)
        # the momentum target network starts as a copy (ξ = θ) and is saved with the model's state_dict
        self.target = (
            nn.ModuleDict({"backbone": frozen_copy(self.backbone), "projector": frozen_copy(self.projector)})
            if cfg.method in MOMENTUM_METHODS
            else None
        )
        self.tasks = list(cfg.equivariance)
        self.orders = [make_group(t.group).order for t in self.tasks]
        self.heads = nn.ModuleDict(
            {  # a relative task's head sees two embeddings side by side
                t.group.replace("*", "x"): prediction_head(
                    t.head, dim * (2 if t.relative else 1), head_outputs(t.loss, order)
                )
                for t, order in zip(self.tasks, self.orders)
            }
        )

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Momentum update of the target network, ξ ← τ·ξ + (1 − τ)·θ (BYOL §3.1, MoCo v3 Algorithm 1)."""
        if self.target is None:
            raise RuntimeError(f"{self.method} has no momentum target network (only {', '.join(MOMENTUM_METHODS)})")
        ema_update(self.target["backbone"], self.backbone, tau)
        ema_update(self.target["projector"], self.projector, tau)

    def ssl_loss(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_ssl, backbone features of x1)``."""
        h1 = self.backbone(x1)
        z1, z2 = self.projector(h1), self.projector(self.backbone(x2))
        if self.predictor is not None:
            p1, p2 = self.predictor(z1).float(), self.predictor(z2).float()
        if self.target is not None:
            with torch.no_grad():
                t1, t2 = (self.target["projector"](self.target["backbone"](x)).float() for x in (x1, x2))
        # The loss itself runs in float32 even under autocast (similarities, cross-correlations).
        with torch.autocast(z1.device.type, enabled=False):
            z1, z2 = z1.float(), z2.float()
            if self.method == "simclr":
                loss = (nt_xent if self.full_nt_xent else info_nce)(z1, z2, self.temperature)
            elif self.method == "simsiam":
                loss = simsiam_loss(p1, p2, z1, z2)
            elif self.method == "byol":
                loss = byol_loss(p1, p2, t1, t2)
            elif self.method == "mocov3":
                loss = mocov3_loss(p1, p2, t1, t2, self.temperature)
            elif self.method == "vicreg":
                loss = vicreg_loss(z1, z2, *self.vicreg_weights)
            else:
                loss = barlow_twins_loss(z1, z2, self.barlow_lambda)
                if (
                    self.barlow_official_gpus
                ):  # the official code's gradient on that many GPUs (objectives/barlow_twins)
                    loss = scale_gradient(loss, 1.0 / self.barlow_official_gpus)
        return loss, h1

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        predictions: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
        return_features: bool = False,
    ) -> dict[str, torch.Tensor]:
        """``predictions[i]`` is ``(orbit images, element labels)`` for the i-th predicted group; for a relative task
        the images are the references followed by the transformed copies (:func:`relative_features`). With
        ``return_features``, ``out["features"]`` holds the detached backbone features of ``x1`` (for the online
        probe, :mod:`essl.training.online_probe`)."""
        ssl, h1 = self.ssl_loss(x1, x2)
        out = {"ssl_loss": ssl}
        if return_features:
            out["features"] = h1.detach()
        total = ssl
        for task, order, head, (xg, g) in zip(self.tasks, self.orders, self.heads.values(), predictions):
            z = self.backbone(xg)
            if task.relative:
                z = relative_features(z, g.shape[0])
            loss, acc = prediction_loss(head(z), g, task.loss, order)
            out[f"pred_loss/{task.group}"], out[f"pred_acc/{task.group}"] = loss, acc
            total = total + task.weight * loss
        out["loss"] = total
        return out
