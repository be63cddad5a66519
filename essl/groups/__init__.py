"""Finite transformation groups: equivariance targets and invariances (see :mod:`essl.groups.base`).

:func:`make_group` builds a group from its name; ``"a*b"`` is the product group of ``a`` and ``b``.
"""

from __future__ import annotations

from essl.errors import EsslError
from essl.groups.base import ProductGroup, TransformationGroup
from essl.groups.geometric import HorizontalFlip, Rotation4, VerticalFlip

GROUPS: dict[str, type[TransformationGroup]] = {
    "rotation": Rotation4,
    "hflip": HorizontalFlip,
    "vflip": VerticalFlip,
}


def make_group(name: str) -> TransformationGroup:
    """Build a group by name, e.g. ``"rotation"`` or the product ``"rotation*hflip"`` (8 elements)."""
    parts = [p.strip() for p in name.split("*")]
    unknown = [p for p in parts if p not in GROUPS]
    if unknown or not parts:
        raise EsslError(f"Unknown transformation group {name!r}. Known groups: {', '.join(sorted(GROUPS))}; "
                        f"combine them with '*', e.g. 'rotation*hflip'.")
    group = GROUPS[parts[0]]()
    for p in parts[1:]:
        group = ProductGroup(group, GROUPS[p]())
    return group


__all__ = ["GROUPS", "TransformationGroup", "ProductGroup", "Rotation4", "HorizontalFlip", "VerticalFlip",
           "make_group"]
