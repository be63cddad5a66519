"""Optimisers: SGD with momentum and LARS (You et al. 2017), and the parameter groups they use."""

from __future__ import annotations

import torch
from torch import nn

from essl.training.config import PretrainConfig


class LARS(torch.optim.Optimizer):
    """LARS: SGD with momentum where each parameter's update is scaled by the trust ratio
    ``η·‖w‖ / ‖∇w + wd·w‖``. Groups with ``lars_exclude=True`` (biases, norm parameters) get neither weight decay
    nor the trust ratio, as in the Barlow Twins and E-SSL ImageNet code. ``clip=True`` caps the trust ratio at the
    learning rate, i.e. scales by ``min(trust / lr, 1)`` (LARC's clipping, solo-learn's ``clip_lr``)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        clip: bool = False,
    ):
        super().__init__(
            params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False, clip=clip)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    d = d.add(p, alpha=group["weight_decay"])
                    w_norm, d_norm = torch.norm(p), torch.norm(d)
                    trust = group["eta"] * w_norm / d_norm
                    if group.get("clip"):
                        trust = torch.clamp(trust / group["lr"], max=1.0) if group["lr"] > 0 else torch.ones_like(trust)
                    trust = torch.where((w_norm > 0) & (d_norm > 0), trust, torch.ones_like(w_norm))
                    d = d.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(d)
                p.add_(mu, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, cfg: PretrainConfig) -> list[dict]:
    """Split parameters into groups: regular, bias/norm (if excluded from decay), SimSiam predictor (fixed lr)."""
    regular, no_decay, predictor = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if cfg.predictor_fixed_lr and name.startswith("predictor."):
            predictor.append(p)
        elif cfg.exclude_bias_norm and p.ndim == 1:
            no_decay.append(p)
        else:
            regular.append(p)
    groups = [{"params": regular, "weight_decay": cfg.weight_decay, "fixed_lr": False, "lars_exclude": False}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "fixed_lr": False, "lars_exclude": True})
    if predictor:
        groups.append({"params": predictor, "weight_decay": cfg.weight_decay, "fixed_lr": True, "lars_exclude": False})
    return groups


def build_optimizer(model: nn.Module, cfg: PretrainConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "lars":
        return LARS(
            groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta, clip=cfg.lars_clip
        )
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
