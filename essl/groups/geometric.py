"""Geometric groups: four-fold rotation, flips, 2×2 jigsaw and half-cell periodic translations.

The first three are among the seven transformations of the paper's invariance-vs-equivariance sweep
(horizontal and vertical flips, four-fold rotations, 2×2 jigsaws); the half-cell translations are the group
predicted on the photonic "Blob" unit cells (rdangovs/essl ``photonics/symop_utils.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from essl.errors import EsslError
from essl.groups.base import Involution, TransformationGroup


def _require_even(name: str, shape: Sequence[int], what: str) -> None:
    h, w = shape[-2], shape[-1]
    if h % 2 or w % 2:
        raise EsslError(
            f"The {name!r} transformation {what}, so it needs an even image height and width; got "
            f"{h}×{w}. Use an even crop size for the view it acts on."
        )


class Rotation4(TransformationGroup):
    """The four 90° rotations C4. Element ``k`` is ``torch.rot90(x, k, dims=(H, W))`` (k quarter-turns
    counter-clockwise), exactly the labels of the paper's rotation prediction (``rotate_images``).
    Composition adds quarter-turns modulo 4."""

    name = "rotation"
    order = 4
    elements = ("0°", "90°", "180°", "270°")

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        if shape[-1] != shape[-2]:
            raise EsslError(
                f"Four-fold rotation needs square images (a 90° turn of {shape[-2]}×{shape[-1]} changes "
                f"the shape); use square crops."
            )

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.rot90(x, int(k), dims=(-2, -1))

    def compose(self, a: int, b: int) -> int:
        return (int(a) + int(b)) % 4

    def inverse(self, k: int) -> int:
        return (-int(k)) % 4


class HorizontalFlip(Involution):
    """Mirror left-right (element 1) or not (element 0)."""

    name = "hflip"
    elements = ("id", "h-flip")

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x.flip(-1) if k else x


class VerticalFlip(Involution):
    """Mirror top-bottom (element 1) or not (element 0)."""

    name = "vflip"
    elements = ("id", "v-flip")

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x.flip(-2) if k else x


#: The 24 permutations of the quadrants in :func:`itertools.permutations` order; entry 0 is the identity.
JIGSAW_PERMUTATIONS: tuple[tuple[int, int, int, int], ...] = tuple(
    (a, b, c, d) for a, b, c, d in itertools.permutations(range(4))
)


class Jigsaw2x2(TransformationGroup):
    """2×2 jigsaw: the 24 permutations of the four quadrants (the symmetric group S4).

    Quadrants are numbered 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. Element ``k`` is the
    permutation ``p = JIGSAW_PERMUTATIONS[k]`` (``itertools.permutations`` order, so element 0 is the identity);
    position ``i`` of the output shows quadrant ``p[i]`` of the input. Needs an even height and width.
    """

    name = "jigsaw"
    order = 24

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        _require_even(self.name, shape, "swaps equal quadrants")

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        k = int(k)
        if k == 0:
            return x
        p = JIGSAW_PERMUTATIONS[k]
        self.check_shape(x.shape)
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        q = (x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:])
        top = torch.cat((q[p[0]], q[p[1]]), dim=-1)
        bottom = torch.cat((q[p[2]], q[p[3]]), dim=-1)
        return torch.cat((top, bottom), dim=-2)

    def compose(self, a: int, b: int) -> int:
        pa, pb = JIGSAW_PERMUTATIONS[int(a)], JIGSAW_PERMUTATIONS[int(b)]
        # after b, position j shows quadrant pb[j]; after a, position i shows what was at pa[i]
        return JIGSAW_PERMUTATIONS.index(tuple(pb[pa[i]] for i in range(4)))

    def inverse(self, k: int) -> int:
        p = JIGSAW_PERMUTATIONS[int(k)]
        inv = [0] * 4
        for i, pi in enumerate(p):
            inv[pi] = i
        return JIGSAW_PERMUTATIONS.index(tuple(inv))


class HalfTranslation(TransformationGroup):
    """Half-cell periodic translations Z2 × Z2 for periodic images (photonic unit cells, ``symop_utils.py``).

    Element ``k`` rolls the image (``torch.roll``, wrapping around) by ``(k // 2) · H/2`` rows and
    ``(k % 2) · W/2`` columns: 0 → (0, 0), 1 → (0, W/2), 2 → (H/2, 0), 3 → (H/2, W/2), the labels of the official
    ``trans_and_get_labels`` with two steps per axis. Needs an even height and width.
    """

    name = "translation"
    order = 4
    elements = ("(0,0)", "(0,½)", "(½,0)", "(½,½)")

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        _require_even(self.name, shape, "rolls by half the image")

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        k = int(k)
        if k == 0:
            return x
        self.check_shape(x.shape)
        return torch.roll(x, shifts=((k // 2) * x.shape[-2] // 2, (k % 2) * x.shape[-1] // 2), dims=(-2, -1))

    def compose(self, a: int, b: int) -> int:
        return int(a) ^ int(b)

    def inverse(self, k: int) -> int:
        return int(k)
