"""TM plane-wave-expansion band solver for pixel unit cells (reference/photonics.md section 7.1).

Units: lattice constant ``a = 1``; ``k`` and ``G`` in units of ``2 pi / a``; frequencies
``f = omega a / (2 pi c)``; group velocities ``df/dk`` in units of ``c`` (as MPB reports them).

TM (``E_z``) master equation, expanded in plane waves ``E_z = sum_G E_G exp(i (k+G).r)``::

    |k+G|^2 E_G = f^2 sum_G' eps(G - G') E_G'          i.e.  A x = lambda B x,  lambda = f^2

with ``A = diag |k+G|^2`` and ``B = [eps(G - G')]`` (the Laurent / direct rule, correct for the
continuous tangential field ``E_z``).  It is solved in the Hermitian standard form::

    M(k) y = lambda y,    M(k) = D B^-1 D,    D = diag |k+G|,    y = D x

with ``B^-1`` computed once per crystal; each k then costs one ``O(n^2)`` matrix build and a
partial eigensolve for the lowest bands.  Group velocities follow from Hellmann-Feynman::

    df/dk = f * sum_G (k+G) |y_G|^2 / |k+G|^2          (y normalised)

Permittivity Fourier coefficients are exact for piecewise-constant pixels (pixel ``(i, j)``
covers ``[i/N, (i+1)/N) x [j/N, (j+1)/N)``)::

    eps(m, n) = DFT[m mod N, n mod N] / N^2 * sinc(m/N) sinc(n/N) * exp(-i pi (m+n)/N)

valid for any integer ``m, n``.  The plane-wave set is the disc ``m^2 + n^2 <= M^2``
(``M = 10`` gives 317 plane waves).

For cells with an inversion centre ``r0`` the coefficients ``eps(G) exp(2 pi i G.r0)`` are real,
so ``M(k)`` is real symmetric for every ``k`` and a real eigensolver (about 3x faster) is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from essl.photonics.symmetry import PointGroup, detect_point_group, kgrid, reduce_kgrid

__all__ = [
    "Bands",
    "CrystalOperator",
    "band_structure",
    "crystal_operator",
    "pixel_fourier_coefficients",
    "plane_wave_orders",
    "solve_kpoints",
]


def plane_wave_orders(cutoff: float = 10.0) -> np.ndarray:
    """Integer reciprocal vectors ``(m, n)`` with ``m^2 + n^2 <= cutoff^2``, sorted by length.

    ``cutoff = 7, 10, 13`` give 149, 317 and 529 plane waves.
    """
    c = int(np.floor(cutoff))
    m, n = np.meshgrid(np.arange(-c, c + 1), np.arange(-c, c + 1), indexing="ij")
    keep = m**2 + n**2 <= cutoff**2 + 1e-9
    orders = np.stack([m[keep], n[keep]], axis=1)
    lengths = orders[:, 0] ** 2 + orders[:, 1] ** 2
    return orders[np.lexsort((orders[:, 1], orders[:, 0], lengths))]


def pixel_fourier_coefficients(image: np.ndarray, m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Exact Fourier coefficients ``eps(m, n)`` of a piecewise-constant pixel image.

    ``eps(G) = int_cell eps(r) exp(-2 pi i G.r) d^2r`` (section 7.1); ``m`` and ``n`` are integer
    arrays of the same shape, any magnitude (no aliasing).
    """
    image = np.asarray(image, dtype=np.float64)
    res = image.shape[0]
    dft = np.fft.fft2(image) / float(res * res)
    m = np.asarray(m)
    n = np.asarray(n)
    return (
        dft[m % res, n % res]
        * np.sinc(m / res)
        * np.sinc(n / res)
        * np.exp(-1j * np.pi * (m + n) / res)
    )


@dataclass
class CrystalOperator:
    """Per-crystal data of the PWE: plane waves and ``B^-1`` (the only ``O(n^3)`` set-up).

    Attributes:
        orders: ``(n, 2)`` integer reciprocal vectors ``G``.
        binv: ``(n, n)`` inverse of the Laurent permittivity matrix; real when ``real``.
        real: whether the origin was moved to an inversion centre (real-symmetric path).
    """

    orders: np.ndarray
    binv: np.ndarray
    real: bool

    @property
    def size(self) -> int:
        """Number of plane waves."""
        return int(self.orders.shape[0])


def crystal_operator(image: np.ndarray, cutoff: float = 10.0,
                     inversion_centre: tuple[float, float] | None = None) -> CrystalOperator:
    """Build ``B = [eps(G - G')]`` for ``image`` and invert it once (section 7.1).

    Args:
        image: ``(N, N)`` permittivity image (all values > 0).
        cutoff: plane-wave cutoff ``M`` (disc ``|G| <= M``).
        inversion_centre: ``r0`` (lattice units, from the corner of pixel ``(0, 0)``) of a
            *verified* inversion symmetry; enables the real-symmetric path.  Pass ``None`` for
            the general complex Hermitian path.
    """
    orders = plane_wave_orders(cutoff)
    dm = orders[:, None, 0] - orders[None, :, 0]
    dn = orders[:, None, 1] - orders[None, :, 1]
    lim = int(np.max(np.abs(dm)))
    grid = np.arange(-lim, lim + 1)
    table = pixel_fourier_coefficients(image, grid[:, None], grid[None, :])
    real = inversion_centre is not None
    if real:
        r0 = np.asarray(inversion_centre, dtype=np.float64)
        table = table * np.exp(2j * np.pi * (grid[:, None] * r0[0] + grid[None, :] * r0[1]))
        imag = float(np.max(np.abs(table.imag)))
        if imag > 1e-9 * float(np.max(np.abs(table.real))):
            raise ValueError(f"image is not inversion-symmetric about {tuple(r0)} "
                             f"(imaginary part {imag:.2e})")
        table = table.real
    bmat = table[dm + lim, dn + lim]
    bmat = 0.5 * (bmat + bmat.conj().T)
    chol = sla.cho_factor(bmat, lower=True, check_finite=False)
    binv = sla.cho_solve(chol, np.eye(len(orders), dtype=bmat.dtype), check_finite=False)
    binv = 0.5 * (binv + binv.conj().T)
    return CrystalOperator(orders=orders, binv=binv, real=real)


def solve_kpoints(op: CrystalOperator, kpoints: np.ndarray,
                  nbands: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Lowest ``nbands`` frequencies and Hellmann-Feynman group velocities at each k-point.

    Each k solves ``M(k) = D B^-1 D`` with LAPACK's partial Hermitian eigensolver
    (``?heevr``/``?syevr``, eigenvalues ``0..nbands-1``).

    Returns:
        ``(freqs, vels)``: ``(nk, nbands)`` frequencies ``f`` (c/a) and ``(nk, nbands, 2)``
        velocities ``df/dk`` (units of c).
    """
    kpoints = np.atleast_2d(np.asarray(kpoints, dtype=np.float64))
    gvec = op.orders.astype(np.float64)
    nk = kpoints.shape[0]
    freqs = np.empty((nk, nbands))
    vels = np.empty((nk, nbands, 2))
    for i, k in enumerate(kpoints):
        kg = gvec + k
        d2 = np.einsum("ij,ij->i", kg, kg)
        d = np.sqrt(d2)
        mat = op.binv * np.outer(d, d)
        lam, vec = sla.eigh(mat, subset_by_index=[0, nbands - 1], driver="evr",
                            check_finite=False, overwrite_a=True)
        f = np.sqrt(np.clip(lam, 0.0, None))
        inv_d2 = np.divide(1.0, d2, out=np.zeros_like(d2), where=d2 > 0)
        p = np.abs(vec) ** 2 * inv_d2[:, None]  # (n, nbands)
        freqs[i] = f
        vels[i] = (f[:, None] * (p.T @ kg))
    return freqs, vels


@dataclass
class Bands:
    """Band data on the (reduced) k-grid.

    Attributes:
        kpoints: ``(m, 2)`` k-points (units of 2 pi / a).
        weights: ``(m,)`` orbit sizes; they sum to ``nk**2``.
        freqs: ``(m, nbands)`` frequencies (c/a).
        vels: ``(m, nbands, 2)`` group velocities (c).
        nk: grid size per axis.
        group: name of the verified point group used for the reduction.
    """

    kpoints: np.ndarray
    weights: np.ndarray
    freqs: np.ndarray
    vels: np.ndarray
    nk: int
    group: str


def band_structure(image: np.ndarray, nbands: int = 10, cutoff: float = 10.0, nk: int = 25,
                   symmetry: str = "auto") -> Bands:
    """Bands of ``image`` on the SIB-CL ``nk x nk`` grid, reduced by the verified symmetry.

    Args:
        image: ``(N, N)`` permittivity image.
        nbands: number of bands (10 in the E-SSL data).
        cutoff: plane-wave cutoff ``M``.
        nk: k-grid size per axis (25 in the E-SSL data).
        symmetry: ``"auto"`` detects the point group on the image
            (:func:`~.symmetry.detect_point_group`) and uses it for the k-grid reduction and,
            if it contains inversion, for the real-symmetric path; ``"time-reversal"`` uses
            only ``k -> -k``; ``"none"`` solves the full grid.
    """
    image = np.asarray(image, dtype=np.float64)
    if symmetry == "auto":
        pg = detect_point_group(image)
    elif symmetry in ("time-reversal", "none"):
        pg = PointGroup((np.eye(2, dtype=np.int64),), ((0, 0),), None)
    else:
        raise ValueError(f"symmetry must be 'auto', 'time-reversal' or 'none', got {symmetry!r}")
    if symmetry == "none":
        kpts, weights = kgrid(nk), np.ones(nk * nk)
    else:
        kpts, weights = reduce_kgrid(pg.ops, nk)
    op = crystal_operator(image, cutoff, pg.inversion_centre)
    freqs, vels = solve_kpoints(op, kpts, nbands)
    return Bands(kpts, weights, freqs, vels, nk, pg.name)
