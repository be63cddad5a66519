"""Frozen-feature extraction: backbone in eval mode, no gradients, un-augmented normalised images."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from essl.augmentation import Normalize


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op for fp32."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def extract_features(backbone: nn.Module, images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                     batch_size: int = 512, device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = None, channels_last: bool = False) -> torch.Tensor:
    """Features ``(N, D)`` in float32 of uint8 ``images`` (N, C, H, W); restores the backbone's train/eval mode."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    norm = Normalize(mean, std).to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = norm(images[start:start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
            out.append(backbone(x).float().cpu())
    backbone.train(was_training)
    return torch.cat(out)
