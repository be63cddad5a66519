"""Geometric groups on square images: four-fold rotation and flips."""

from __future__ import annotations

import torch

from essl.groups.base import TransformationGroup


class Rotation4(TransformationGroup):
    """The four 90° rotations C4. Element ``k`` is ``torch.rot90(x, k, dims=(H, W))`` (k quarter-turns
    counter-clockwise), exactly the labels of the paper's rotation prediction."""

    name = "rotation"
    order = 4

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.rot90(x, int(k), dims=(-2, -1))


class HorizontalFlip(TransformationGroup):
    """Mirror left-right (element 1) or not (element 0)."""

    name = "hflip"
    order = 2

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x.flip(-1) if k else x


class VerticalFlip(TransformationGroup):
    """Mirror top-bottom (element 1) or not (element 0)."""

    name = "vflip"
    order = 2

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x.flip(-2) if k else x
