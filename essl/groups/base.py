"""Finite transformation groups acting on image batches.

A group ``G`` of order ``n`` is used in two ways (Dangovski et al. 2022, §3):

- as an **equivariance target**: :meth:`TransformationGroup.orbit` applies *every* element to every image and
  returns the labels, so a head can be trained to predict ``g`` from ``f(g·x)`` (the E-SSL loss);
- as an **invariance**: :meth:`TransformationGroup.sample` applies one uniformly drawn element per image, used as
  an extra augmentation of the SSL views (the "I-SSL" baseline of the transformation sweep).

A new group only implements :meth:`apply` (element ``k`` on a whole batch). Elements are numbered
``0..order-1`` and element 0 is the identity.
"""

from __future__ import annotations

import torch


class TransformationGroup:
    """Base class: subclasses set ``name`` and ``order`` and implement :meth:`apply`."""

    name: str = "group"
    order: int = 1

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Apply element ``k`` to every image of ``x`` (N, C, H, W)."""
        raise NotImplementedError

    def act(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Apply element ``g[i]`` to image ``x[i]`` (per-sample elements)."""
        out = x.clone()
        for k in range(self.order):
            mask = g == k
            if mask.any():
                out[mask] = self.apply(x[mask], k).to(out.dtype)
        return out

    def orbit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All elements on all images: ``(order*N, C, H, W)`` in element-major order, and labels ``(order*N,)``.

        Block ``k`` (rows ``k*N .. (k+1)*N-1``) is ``apply(x, k)`` with label ``k``, as in the official
        ``rotate_images`` of rdangovs/essl.
        """
        n = x.shape[0]
        out = torch.cat([self.apply(x, k) for k in range(self.order)])
        labels = torch.arange(self.order, device=x.device).repeat_interleave(n)
        return out, labels

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One uniformly drawn element per image (the invariance form). Returns ``(g·x, g)``."""
        g = torch.randint(self.order, (x.shape[0],), generator=generator, device="cpu").to(x.device)
        return self.act(x, g), g

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, order={self.order})"


class ProductGroup(TransformationGroup):
    """Direct product ``A × B``: element ``k = a * |B| + b`` applies ``b`` of B, then ``a`` of A.

    With commuting factors (e.g. rotation × flip on a square) the order does not matter; :meth:`decode`
    recovers the components of a label.
    """

    def __init__(self, first: TransformationGroup, second: TransformationGroup):
        self.first, self.second = first, second
        self.name = f"{first.name}x{second.name}"
        self.order = first.order * second.order

    def decode(self, k: torch.Tensor | int) -> tuple:
        """Label of the product → (label in the first factor, label in the second)."""
        return k // self.second.order, k % self.second.order

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        a, b = self.decode(k)
        return self.first.apply(self.second.apply(x, b), a)
