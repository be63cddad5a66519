"""Frozen-feature extraction: backbone in eval mode, no gradients, un-augmented normalised images."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, overload

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from essl.augmentation import Normalize
from essl.runtime import autocast_context


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Features ``(N, D)`` in float32 of uint8 ``images`` (N, C, H, W); restores the backbone's train/eval mode."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    norm = Normalize(mean, std).to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = norm(images[start : start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
            out.append(backbone(x).float().cpu())
    backbone.train(was_training)
    return torch.cat(out)


def shard(n: int, rank: int, world: int) -> range:
    """The contiguous block of ``range(n)`` that process ``rank`` of ``world`` handles."""
    return range(n * rank // world, n * (rank + 1) // world)


@overload
def extract_dataset_features(
    backbone: nn.Module,
    dataset: Dataset,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = ...,
    workers: int = ...,
    device: torch.device | str = ...,
    dtype: torch.dtype | None = ...,
    channels_last: bool = ...,
    out: None = None,
) -> torch.Tensor: ...


@overload
def extract_dataset_features(
    backbone: nn.Module,
    dataset: Dataset,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = ...,
    workers: int = ...,
    device: torch.device | str = ...,
    dtype: torch.dtype | None = ...,
    channels_last: bool = ...,
    *,
    out: np.ndarray,
) -> None: ...


@torch.no_grad()
def extract_dataset_features(
    backbone: nn.Module,
    dataset: Dataset,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 256,
    workers: int = 4,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    out: np.ndarray | None = None,
) -> torch.Tensor | None:
    """Features ``(N, D)`` of a map-style dataset of uint8 images (decoded in ``workers`` DataLoader workers).

    Under several processes, each extracts its contiguous block of items (:func:`shard`). Memory is bounded by
    the batch size and the workers' prefetch: with ``out`` (a ``(len(block), D)`` array, e.g. a float16 memmap
    of this process's own file) the block's rows are written into it and nothing is returned; else the blocks
    are gathered and the ``(N, D)`` float32 tensor is returned on every process."""
    if not isinstance(dataset, Sized):
        raise TypeError(
            f"extract_dataset_features needs a map-style dataset with a length, got {type(dataset).__name__}"
        )
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    mine = shard(len(dataset), rank, world)
    kw: dict[str, Any] = dict(num_workers=workers, pin_memory=device.type == "cuda")
    if workers > 0:
        kw["prefetch_factor"] = 2
    loader = DataLoader(Subset(dataset, list(mine)), batch_size=batch_size, shuffle=False, **kw)
    was_training = backbone.training
    backbone.eval()
    norm = Normalize(mean, std).to(device)
    parts, start = [], 0
    for x in loader:
        x = norm(x.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
            f = backbone(x).float().cpu()
        if out is not None:
            out[start : start + len(f)] = f.numpy().astype(out.dtype)
        else:
            parts.append(f)
        start += len(f)
    backbone.train(was_training)
    if out is not None:
        return None
    local = torch.cat(parts) if parts else torch.zeros(0, 0)
    if world == 1:
        return local
    return _gather_blocks(local, len(dataset), world, device)


def _gather_blocks(local: torch.Tensor, n: int, world: int, device: torch.device) -> torch.Tensor:
    """Put the blocks of every process (:func:`shard`) together into one ``(n, D)`` tensor, on every process."""
    per = -(-n // world)
    dim = torch.tensor([local.shape[1] if len(local) else 0], device=device)
    dist.all_reduce(dim, op=dist.ReduceOp.MAX)
    padded = torch.zeros(per, int(dim), device=device)
    if len(local):
        padded[: len(local)] = local.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: len(shard(n, r, world))].cpu() for r, g in enumerate(gathered)])
