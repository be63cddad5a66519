"""Transformations of periodic unit cells used as invariances in the photonics experiment.

The E-SSL photonics code (rdangovs/essl ``photonics/symop_utils.py``) augments the
32×32 permittivity images of photonic crystals with operations that leave the density of states unchanged:

| name   | order | elements                                                                | group |
|--------|-------|-------------------------------------------------------------------------|-------|
| ``roll`` | H·W (1024 at 32 px) | every cyclic shift ``torch.roll(x, (k // W, k % W))``     | Z_H × Z_W |
| ``flip`` | 3   | identity, mirror left-right, mirror top-bottom (one drawn uniformly)    | no    |

- ``roll`` is the official ``translate_cont_tensor``: a random periodic translation by 0..H-1 rows and
  0..W-1 columns, drawn uniformly. It is the GPM invariance ("continuous periodic translations"); the half-cell
  translations predicted on Blob cells are its subgroup ``translation`` (:class:`essl.groups.HalfTranslation`).
  Its order depends on the image size, so the group is built for one size (32×32 by default, the unit cells)
  and refuses others; per-sample random shifts are applied with one gather instead of a loop over the
  ``H·W`` elements.
- ``flip`` is the official ``flip_tensor``: per image, flip horizontally, vertically, or not at all, each with
  probability 1/3. Unlike two independent ``hflip``/``vflip`` draws it never applies both (that would be a
  180° rotation, which for GPM cells belongs to the predicted group). The three elements are not closed
  under composition (h∘v is a rotation), so ``flip`` is a transformation *set*: :meth:`compose` raises;
  each element is its own inverse.

- ``eps_scale`` is the official ``scale_tensor`` (``--scale``, off in the paper's runs): it multiplies the whole
  permittivity map of a cell by one random factor ``s``. The official code draws ``s`` uniformly from (0, 2] and
  redraws until the scaled cell lies strictly inside (1, 20), the permittivity range of the data; that is ``s``
  uniform on ``(1/ε_min, min(2, 20/ε_max))``, which essl draws directly (:class:`EpsilonScale`). A cell for which
  this interval is empty (one spanning the whole range, e.g. ε from 1 to 20) keeps ``s = 1``; the official loop
  never ends on such a cell. The DOS target is invariant under the scaling: ε → sε scales every frequency by
  1/√s and √ε_avg by √s, so ``ω̃ = ω·√ε_avg`` and ``DOS/√ε_avg`` do not change. It is a continuous family, not a
  finite group: an invariance, never a predicted group.

All act on float batches ``(N, C, H, W)``; like every group here they are applied before normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from essl.errors import EsslError
from essl.groups.base import TransformationGroup

#: Side of the photonic unit-cell images (``unitcell/mpbepsimage``, 32 × 32).
CELL_SIZE = 32


class PeriodicTranslation(TransformationGroup):
    """All ``H·W`` cyclic shifts of an ``H×W`` periodic image (Z_H × Z_W).

    Element ``k`` rolls the image (wrapping around) by ``k // W`` rows and ``k % W`` columns; element 0 is the
    identity. Composition adds shifts modulo the size; the inverse negates them.
    """

    name = "roll"

    def __init__(self, height: int = CELL_SIZE, width: int = CELL_SIZE):
        if height < 1 or width < 1:
            raise EsslError(f"A periodic translation group needs a positive size, got {height}×{width}.")
        self.height, self.width = int(height), int(width)
        self.order = self.height * self.width

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        if tuple(shape[-2:]) != (self.height, self.width):
            raise EsslError(
                f"The {self.name!r} group holds the {self.order} cyclic shifts of {self.height}×"
                f"{self.width} images; got {shape[-2]}×{shape[-1]}. Periodic translations are meant "
                f"for unit cells of that size (build PeriodicTranslation(height, width) for another)."
            )

    def shift(self, k: int | torch.Tensor) -> tuple:
        """Element ``k`` → (rows, columns) it rolls by."""
        return k // self.width, k % self.width

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        self.check_shape(x.shape)
        dy, dx = self.shift(int(k))
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1)) if k else x

    def act(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-sample shifts in one gather: ``out[i, :, r, c] = x[i, :, (r - dy_i) % H, (c - dx_i) % W]``."""
        self.check_shape(x.shape)
        n, c, h, w = x.shape
        dy, dx = self.shift(g.to(x.device).long())
        rows = (torch.arange(h, device=x.device)[None, :] - dy[:, None]) % h  # (N, H)
        cols = (torch.arange(w, device=x.device)[None, :] - dx[:, None]) % w  # (N, W)
        out = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
        return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))

    def compose(self, a: int, b: int) -> int:
        (ya, xa), (yb, xb) = self.shift(int(a)), self.shift(int(b))
        return ((ya + yb) % self.height) * self.width + (xa + xb) % self.width

    def inverse(self, k: int) -> int:
        dy, dx = self.shift(int(k))
        return ((-dy) % self.height) * self.width + (-dx) % self.width


class FlipOrNone(TransformationGroup):
    """Identity (0), mirror left-right (1) or mirror top-bottom (2): the official photonics random flip."""

    name = "flip"
    order = 3
    elements = ("id", "h-flip", "v-flip")

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        k = int(k)
        if k == 0:
            return x
        return x.flip(-1) if k == 1 else x.flip(-2)

    def inverse(self, k: int) -> int:
        return int(k)


#: Permittivity range of the photonics data, and the official largest scale factor (``scale_tensor``).
EPS_MIN, EPS_MAX, MAX_SCALE = 1.0, 20.0, 2.0


class EpsilonScale(TransformationGroup):
    """Scale each cell's permittivity by a random factor keeping it inside (1, 20) (official ``--scale``).

    Acts on ``x = (ε − 1)/19``: ``x' = (s·ε − 1)/19`` with ``s ~ U(1/ε_min, min(2, 20/ε_max))`` per cell
    (module docstring). Only :meth:`sample` is defined (it returns the factors as its second value).
    """

    name = "eps_scale"
    finite = False

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        raise EsslError("eps_scale is a continuous random scaling; it is drawn with sample(), not by element.")

    def orbit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise EsslError("eps_scale is a continuous transformation: use it as an invariance, not a predicted group.")

    @staticmethod
    def factor_range(eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cell ``(low, high)`` of the factors that keep ``eps`` (N, ...) inside (1, 20)."""
        flat = eps.reshape(eps.shape[0], -1)
        low = EPS_MIN / flat.min(1).values.clamp_min(1e-6)
        high = (EPS_MAX / flat.max(1).values.clamp_min(1e-6)).clamp_max(MAX_SCALE)
        return low, high

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None, repeats: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_shape(x.shape)
        if repeats > 1:
            x = x.repeat(repeats, *([1] * (x.dim() - 1)))
        eps = x * (EPS_MAX - EPS_MIN) + EPS_MIN
        low, high = self.factor_range(eps)
        u = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device, x.dtype)
        s = torch.where(high > low, low + (high - low) * u, torch.ones_like(u))
        out = (eps * s.view(-1, *([1] * (x.dim() - 1))) - EPS_MIN) / (EPS_MAX - EPS_MIN)
        return out, s
