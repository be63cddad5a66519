"""Batches of uint8 images for one epoch, sharded over processes with exact epoch semantics.

Every process draws the same seeded permutation of the dataset for an epoch (``seed``, ``epoch``) and takes its
slice of each global batch, so the global batches are identical whatever the number of processes, and a resumed
epoch replays the same order. The last incomplete global batch is dropped (``drop_last``, as in the paper).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from essl.errors import EsslError


class TensorBatches:
    def __init__(self, images: torch.Tensor, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise EsslError(f"batch_size {global_batch} must be divisible by the number of processes ({world_size}).")
        if len(images) < global_batch:
            raise EsslError(f"The dataset has {len(images)} images, fewer than batch_size={global_batch}; "
                            f"lower batch_size.")
        self.images, self.global_batch, self.seed = images, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size

    def __len__(self) -> int:
        return len(self.images) // self.global_batch

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.images), generator=g)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        order = self.order(epoch)
        for step in range(start_step, len(self)):
            start = step * self.global_batch + self.rank * self.local_batch
            yield self.images[order[start:start + self.local_batch]]
