"""Random two-tone photonic-crystal unit cells (after clott3/SIB-CL ``generate_datasets/PhC``).

Families:

* ``gpm``: level set of a random Fourier sum with ``maxF = 1`` symmetrised over plane group
  **pm** (one mirror, ``x -> -x``).  Stand-in for E-SSL's ``mf1-sg3`` "GPM" cells
  (section 3.1; "sg3 = pm" is an inference of the reference note).
* ``blob``: the same with ``maxF = 2`` symmetrised over **p4mm** (C4v).  A documented
  *Blob-like* stand-in; the original blob generator is unpublished (section 3.2).
* ``p1``: SIB-CL's ``mf1`` cells, ``maxF = 1`` and no symmetry (section 3.3).
* ``cylinder``: SIB-CL's surrogate, one rod of radius ``r = |U(0, 1/2) - 1/2|`` centred in the
  cell (section 3.3).

Fourier sum (SIB-CL ``fourier_phc.py``): ``f(r) = sum_G Re[c_G exp(2 pi i G.r)]`` over
``G in {-maxF..maxF}^2`` with ``c_G = rho exp(i phi)``, ``rho ~ U(0, 1)``, ``phi ~ U(0, 2 pi)``.
Symmetrising over a point group ``P`` averages ``f(R r)`` over ``R in P``, i.e.
``c'_H = mean_R c_{R H}``; positions ``r`` are measured from the cell centre, which is a pixel
corner, so every operation maps the pixel grid onto itself (see :mod:`.symmetry`).

Two-tone rule: the level is the ``filling``-quantile of ``f`` and ``eps = eps_in`` where
``f > level``, ``eps_out`` elsewhere, so ``filling`` is the area fraction of ``eps_out``
(SIB-CL convention).  For ``cylinder`` ``f = -|r|`` and ``level = -radius``, which keeps the
same meaning (``filling = 1 - pi r^2``).

Images are anti-aliased: ``f`` is evaluated at ``supersample**2`` sub-pixel centres per pixel
and each pixel is the mean permittivity (section 7.2, "Recommendation").  The stored image is
float32 and ``epsavg`` is defined as the mean of that stored image (section 5).

Every random draw comes from a generator seeded by ``(seed, family, index)`` alone, so a cell
is reproducible regardless of how generation is sharded.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from essl.photonics.symmetry import GROUPS, apply_op

__all__ = ["FAMILIES", "FamilySpec", "UnitCell", "cell_rng", "make_cell", "make_cells"]


@dataclass(frozen=True)
class FamilySpec:
    """How a family is drawn: Fourier order and point group (``None`` for a cylinder)."""

    max_order: int | None
    group: str


#: The cell families, by name.
FAMILIES: dict[str, FamilySpec] = {
    "gpm": FamilySpec(max_order=1, group="pm"),
    "blob": FamilySpec(max_order=2, group="p4mm"),
    "p1": FamilySpec(max_order=1, group="p1"),
    "cylinder": FamilySpec(max_order=None, group="p4mm"),
}


@dataclass
class UnitCell:
    """One generated unit cell and how it was drawn.

    Attributes:
        image: ``(res, res)`` float32 permittivity image, values in ``[eps_lo, eps_hi]``.
        epsavg: mean of ``image`` (computed in float64), the ``unitcell/epsavg`` value.
        eps_in: permittivity where ``f > level``.
        eps_out: permittivity where ``f <= level``.
        filling: nominal area fraction of ``eps_out`` (the quantile used for the level).
        level: the level-set threshold (``-radius`` for a cylinder).
        coefficients: symmetrised Fourier coefficients ``c'_G`` as a complex
            ``(2 maxF + 1, 2 maxF + 1)`` array indexed ``[gx + maxF, gy + maxF]`` (origin at the
            cell centre); empty ``(0, 0)`` for a cylinder.
        family, seed, index: the reproducibility key.
    """

    image: np.ndarray
    epsavg: float
    eps_in: float
    eps_out: float
    filling: float
    level: float
    coefficients: np.ndarray = field(repr=False)
    family: str = ""
    seed: int = 0
    index: int = 0


def cell_rng(seed: int, family: str, index: int) -> np.random.Generator:
    """Random generator for one cell, keyed only by ``(seed, family, index)``."""
    fam_key = zlib.crc32(family.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([int(seed), fam_key, int(index)]))


def _subpixel_coords(res: int, supersample: int) -> np.ndarray:
    """Sub-pixel centres measured from the cell centre; symmetric about 0 exactly in floats."""
    n = res * supersample
    return (np.arange(n) + 0.5 - n / 2.0) / n


def symmetrise_coefficients(coefs: np.ndarray, group: str) -> np.ndarray:
    """Average Fourier coefficients over a point group: ``c'_H = mean_{R in P} c_{R H}``.

    ``coefs`` is indexed ``[gx + F, gy + F]``.  Since ``H -> R H`` is a signed permutation of
    the index square, this is the image-style :func:`~.symmetry.apply_op` with ``R^-1``
    (the groups used are closed under inversion, so the average is the same).
    """
    ops = GROUPS[group]
    # apply_op maps out(R r) = in(r) about the array's centre when the array has odd size and
    # index 0 at -F; for odd sizes "pixel centres" i + 1/2 - (2F+1)/2 = i - F, i.e. integer G.
    return np.mean([apply_op(coefs, op) for op in ops], axis=0)


def _fourier_field(coefs: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Evaluate ``f(x, y) = Re sum_G c_G exp(2 pi i (gx x + gy y))`` on a separable grid."""
    order = (coefs.shape[0] - 1) // 2
    g = np.arange(-order, order + 1)
    phase = np.exp(2j * np.pi * np.outer(g, coords))  # (2F+1, n)
    return np.real(phase.T @ coefs @ phase)


def _exactly_symmetric(field_: np.ndarray, group: str) -> np.ndarray:
    """Average a sampled field over the group so that it is symmetric bit for bit.

    The values summed at a point and at its images are the same multiset; sorting them before
    summing makes the floating-point result identical, so the level set (and hence the image)
    has the exact symmetry the family claims.
    """
    ops = GROUPS[group]
    if len(ops) == 1:
        return field_
    stack = np.sort(np.stack([apply_op(field_, op) for op in ops]), axis=0)
    return stack.sum(axis=0) / len(ops)


def _two_tone_image(inside: np.ndarray, eps_in: float, eps_out: float, res: int, supersample: int) -> np.ndarray:
    """Pixel = mean permittivity of its sub-pixels, computed from an exact integer count."""
    count = inside.reshape(res, supersample, res, supersample).sum(axis=(1, 3))
    frac = count / float(supersample * supersample)
    return (eps_out + (eps_in - eps_out) * frac).astype(np.float32)


def make_cell(
    family: str,
    index: int,
    seed: int = 0,
    res: int = 32,
    supersample: int = 8,
    eps_range: tuple[float, float] = (1.0, 20.0),
    fill_range: tuple[float, float] = (0.01, 0.99),
    max_order: int | None = None,
) -> UnitCell:
    """Draw unit cell number ``index`` of ``family`` (section 3; reproducible per key).

    Args:
        family: one of :data:`FAMILIES`.
        index: sample index (the 1-based h5 index in generated files).
        seed: dataset seed.
        res: image resolution (32 in every E-SSL file).
        supersample: anti-aliasing factor per axis (pixel = mean of ``supersample**2`` samples).
        eps_range: ``eps_in`` and ``eps_out`` are drawn independently and uniformly from it.
        fill_range: ``filling`` is drawn uniformly from it (level-set families).
        max_order: overrides the family's Fourier order ``maxF``.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown cell family {family!r}; choose from {sorted(FAMILIES)}")
    spec = FAMILIES[family]
    rng = cell_rng(seed, family, index)
    eps_in, eps_out = (float(v) for v in rng.uniform(eps_range[0], eps_range[1], size=2))
    coords = _subpixel_coords(res, supersample)
    if spec.max_order is None:
        radius = float(abs(rng.uniform(0.0, 0.5) - 0.5))
        x2 = coords**2
        field_ = -np.sqrt(x2[:, None] + x2[None, :])
        level = -radius
        filling = 1.0 - np.pi * radius**2
        coefs = np.zeros((0, 0), dtype=np.complex128)
    else:
        order = spec.max_order if max_order is None else int(max_order)
        size = 2 * order + 1
        rho = rng.uniform(0.0, 1.0, size=(size, size))
        phi = rng.uniform(0.0, 2.0 * np.pi, size=(size, size))
        filling = float(rng.uniform(fill_range[0], fill_range[1]))
        coefs = symmetrise_coefficients(rho * np.exp(1j * phi), spec.group)
        field_ = _exactly_symmetric(_fourier_field(coefs, coords), spec.group)
        level = float(np.quantile(field_, filling))
    image = _two_tone_image(field_ > level, eps_in, eps_out, res, supersample)
    return UnitCell(
        image=image,
        epsavg=float(image.astype(np.float64).mean()),
        eps_in=eps_in,
        eps_out=eps_out,
        filling=float(filling),
        level=float(level),
        coefficients=coefs,
        family=family,
        seed=int(seed),
        index=int(index),
    )


def make_cells(family: str, indices: range | list[int], seed: int = 0, **kwargs: object) -> list[UnitCell]:
    """:func:`make_cell` for several indices (same keyword arguments)."""
    return [make_cell(family, i, seed=seed, **kwargs) for i in indices]  # type: ignore[arg-type]
