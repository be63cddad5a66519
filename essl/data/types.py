"""The in-memory dataset container shared by all loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from essl.errors import EsslError


@dataclass
class ImageData:
    """Images as a uint8 tensor ``(N, C, H, W)`` (or float32 in [0, 1], e.g. photonic unit cells, whose values are
    continuous) with optional int64 labels ``(N,)``.

    ``mean``/``std`` are the per-channel normalisation constants of the dataset (in [0, 1] units).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype not in (torch.uint8, torch.float32) or self.images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 or float32 (N, C, H, W) tensor, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def require_labels(self) -> torch.Tensor:
        """The labels; an :class:`EsslError` when the split has none (what evaluates a classifier needs them)."""
        if self.labels is None:
            raise EsslError(f"{self.name or 'The dataset'} has no labels; evaluation needs a labelled split.")
        return self.labels

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def take(self, n: int, seed: int = 0) -> ImageData:
        """A seeded random subset of ``n`` images, stratified by class when labels exist."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        if self.labels is None:
            return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)
        order = torch.randperm(len(self), generator=g)
        labels = self.labels[order]
        # round-robin over classes in the random order: a stratified draw
        rank_in_class = torch.zeros(len(self), dtype=torch.long)
        for c in labels.unique():
            idx = (labels == c).nonzero().flatten()
            rank_in_class[idx] = torch.arange(len(idx))
        chosen = order[torch.argsort(rank_in_class * self.num_classes + labels, stable=True)[:n]]
        return self.subset(chosen.sort().values)

    def subset(self, index: torch.Tensor) -> ImageData:
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.num_classes, self.mean, self.std, self.name)
