"""Finite transformation groups: equivariance targets and invariances (see :mod:`essl.groups.base`).

:func:`make_group` builds a group from its name; ``"a*b"`` is the product group of ``a`` and ``b``.

| name          | order | elements                                                         | invertible |
|---------------|-------|------------------------------------------------------------------|------------|
| ``rotation``  | 4     | ``torch.rot90(x, k, dims=(H, W))``                               | yes        |
| ``hflip``     | 2     | identity, mirror left-right                                      | yes        |
| ``vflip``     | 2     | identity, mirror top-bottom                                      | yes        |
| ``grayscale`` | 2     | identity, BT.601 luma (RGB only; an error on 1-channel data)     | no         |
| ``inversion`` | 2     | identity, ``1 − x``                                              | yes        |
| ``jigsaw``    | 24    | permutations of the 2×2 quadrants (``itertools.permutations``)   | yes        |
| ``blur``      | 4     | Gaussian σ = 0, 1, 2, 3 px per 32 px of image side               | no         |
| ``translation`` | 4   | periodic roll by (0,0), (0,W/2), (H/2,0), (H/2,W/2)              | yes        |

Photonic unit cells also have ``roll``, ``flip`` and ``eps_scale`` (a continuous random permittivity scaling,
an invariance only); see :mod:`essl.groups.periodic`.
"""

from __future__ import annotations

from essl.errors import EsslError
from essl.groups.base import Involution, ProductGroup, TransformationGroup
from essl.groups.geometric import HalfTranslation, HorizontalFlip, Jigsaw2x2, Rotation4, VerticalFlip
from essl.groups.photometric import ColourInversion, GaussianBlur4, Grayscale
from essl.groups.periodic import EpsilonScale, FlipOrNone, PeriodicTranslation

GROUPS: dict[str, type[TransformationGroup]] = {
    "rotation": Rotation4,
    "hflip": HorizontalFlip,
    "vflip": VerticalFlip,
    "grayscale": Grayscale,
    "inversion": ColourInversion,
    "jigsaw": Jigsaw2x2,
    "blur": GaussianBlur4,
    "translation": HalfTranslation,
    "roll": PeriodicTranslation,
    "flip": FlipOrNone,  # photonic unit cells (essl/groups/periodic.py)
    "eps_scale": EpsilonScale,
}


def make_group(name: str) -> TransformationGroup:
    """Build a group by name, e.g. ``"rotation"`` or the product ``"rotation*hflip"`` (8 elements)."""
    parts = [p.strip() for p in str(name).split("*")]
    unknown = [p for p in parts if p not in GROUPS]
    if unknown or not parts:
        raise EsslError(
            f"Unknown transformation group {name!r}. Known groups: {', '.join(sorted(GROUPS))}; "
            f"combine them with '*', e.g. 'rotation*hflip'."
        )
    group = GROUPS[parts[0]]()
    for p in parts[1:]:
        group = ProductGroup(group, GROUPS[p]())
    return group


__all__ = [
    "GROUPS",
    "TransformationGroup",
    "ProductGroup",
    "Involution",
    "Rotation4",
    "HorizontalFlip",
    "VerticalFlip",
    "Jigsaw2x2",
    "HalfTranslation",
    "Grayscale",
    "ColourInversion",
    "GaussianBlur4",
    "make_group",
]
