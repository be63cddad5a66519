"""Learning-rate schedule, precomputed per step (as in the DINO reference scripts):
linear warm-up from 0, then cosine decay to ``final`` (Loshchilov & Hutter 2017; Goyal et al. 2017)."""

from __future__ import annotations

import numpy as np


def warmup_cosine(base: float, final: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """``lr[s]`` for ``s = 0..total_steps-1``."""
    warmup_steps = min(warmup_steps, total_steps)
    warm = base * np.arange(1, warmup_steps + 1) / max(warmup_steps, 1) if warmup_steps else np.zeros(0)
    rest = total_steps - warmup_steps
    progress = np.arange(rest) / max(rest, 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * progress))
    return np.concatenate([warm, cosine])


def momentum_schedule(base: float, final: float, total_steps: int) -> np.ndarray:
    """Target-network momentum ``τ[s]``: cosine from ``base`` to ``final`` with no warm-up, i.e. BYOL's
    ``τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2`` for ``final = 1`` (Grill et al. 2020, §3.1; the MoCo v3 code's
    ``--moco-m-cos``)."""
    return warmup_cosine(base, final, total_steps, 0)
