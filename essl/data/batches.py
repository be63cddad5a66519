"""Batches of uint8 images for one epoch, sharded over processes with exact epoch semantics.

Every process draws the same seeded permutation of the dataset for an epoch (``seed``, ``epoch``) and takes its
slice of each global batch, so the global batches are identical whatever the number of processes, and a resumed
epoch replays the same order. The last incomplete global batch is dropped (``drop_last``, as in the paper).

Two sources share this contract (:class:`BatchSource`): :class:`TensorBatches` slices an in-memory uint8 tensor
(MNIST-5k, CIFAR, small image folders) and :class:`essl.data.imagenet.ImageFolderBatches` decodes image files in
DataLoader workers (ImageNet). The :class:`~essl.training.pretrain.Pretrainer` only uses ``len(source)`` (steps
per epoch) and ``source.epoch(epoch)`` (this rank's ``(global_batch / world_size, C, H, W)`` uint8 batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from essl.augmentation.crops import PaddedImages
from essl.errors import EsslError


@runtime_checkable
class BatchSource(Protocol):
    n: int  # images per epoch (the last incomplete global batch included)
    global_batch: int
    local_batch: int

    def __len__(self) -> int:
        """Steps (global batches) per epoch."""

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor | PaddedImages]:
        """This rank's uint8 slice of every global batch of ``epoch``, from ``start_step`` on (decoded image files
        come as :class:`~essl.augmentation.crops.PaddedImages`: padded to the largest, with their sizes)."""


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The permutation of ``n`` items used for ``epoch`` (the same on every rank and in every process count);
    without ``shuffle`` the items in their stored order every epoch (the official photonics loader's
    ``DataLoader(..., shuffle=False)``)."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


class ShardedOrder:
    """Index arithmetic shared by both sources: which items this rank loads at each step of an epoch."""

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if global_batch % world_size:
            raise EsslError(f"batch_size {global_batch} must be divisible by the number of processes ({world_size}).")
        if n < global_batch:
            raise EsslError(f"The dataset has {n} images, fewer than batch_size={global_batch}; lower batch_size.")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.local_batch = global_batch // world_size

    def __len__(self) -> int:
        return self.n // self.global_batch

    def order(self, epoch: int) -> torch.Tensor:
        return epoch_order(self.n, self.seed, epoch, self.shuffle)

    def step_indices(self, order: torch.Tensor, step: int) -> torch.Tensor:
        start = step * self.global_batch + self.rank * self.local_batch
        return order[start : start + self.local_batch]

    def rank_indices(self, epoch: int, start_step: int = 0) -> torch.Tensor:
        """This rank's items for steps ``start_step..len-1`` of ``epoch``, concatenated in step order."""
        order = self.order(epoch)
        steps = range(start_step, len(self))
        if not len(steps):
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([self.step_indices(order, s) for s in steps])


class TensorBatches(ShardedOrder):
    """Batches sliced from an in-memory uint8 tensor ``(N, C, H, W)``."""

    def __init__(
        self,
        images: torch.Tensor,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        super().__init__(len(images), global_batch, seed, rank, world_size, shuffle)
        self.images = images

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        order = self.order(epoch)
        for step in range(start_step, len(self)):
            yield self.images[self.step_indices(order, step)]
