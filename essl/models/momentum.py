"""Momentum (EMA) target networks of BYOL (Grill et al. 2020, §3.1) and MoCo v3 (Chen, Xie & He 2021, §3).

The target's parameters ``ξ`` follow the online parameters ``θ`` after every optimiser step,

    ξ ← τ·ξ + (1 − τ)·θ,

with ``τ`` raised from its base value to 1 over training by a cosine schedule (BYOL Eq. 3:
``τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2``; :func:`essl.training.schedule.momentum_schedule`). Only parameters
are averaged; the target's BatchNorm running statistics come from its own forward passes, as in the official
MoCo v3 code and solo-learn. The target is a frozen copy (no gradients), saved with the model's state_dict.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that takes no gradients (the target network at step 0: ξ = θ)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``ξ ← τ·ξ + (1 − τ)·θ`` for every parameter pair (same architecture, same parameter order)."""
    t_params: list[torch.Tensor] = list(target.parameters())
    o_params: list[torch.Tensor] = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks must have the same parameters")
    torch._foreach_lerp_(t_params, o_params, 1.0 - tau)
