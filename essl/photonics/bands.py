"""Band-structure targets in the layout the official photonics loader reads (``predict='bandstructures'``).

The official ``PhC2D`` (rdangovs/essl ``photonics/phc_data.py``, the same code as SIB-CL's ``datasets_PhC_SE.py``)
can regress band structures instead of the DOS: it reads, per sample ``i``,

- ``mpbcal/efreq/{i}``: the frequencies (c/a) of the lowest bands at the 625 points of the 25×25 k-grid,
  ``(625, 10)``, as SIB-CL's ``phc_gendata.py`` stores MPB's ``all_freqs``; the k-points are in the order of
  SIB-CL's ``get_kgrid``, ``meshgrid(kx, ky)`` raveled, so row ``iy·nk + ix`` is ``(k[ix], k[iy])``
  (:func:`official_kgrid`);
- ``mpbcal/emptylattice/{i}`` and ``mpbcal/eldiff/{i}``: the empty-lattice frequencies and ``efreq − emptylattice``;
  the regression target in the default ``ELdiff`` mode is ``eldiff[:, :nbands]``.

The code that wrote ``emptylattice`` is not public; essl stores the bands of the *homogeneous* crystal of the
same mean permittivity, the lowest ``nbands`` of ``|k + G| / √ε_avg`` over reciprocal vectors ``G`` (the
"empty lattice" of the DOS target, whose DOS is ``2π·ω̃``, :mod:`essl.photonics.dos`).

The solver computes the bands on the symmetry-reduced grid (:func:`essl.photonics.solver.band_structure`);
:func:`full_grid_freqs` spreads them over the full grid (frequencies are equal on a k-orbit of the point group
and of time reversal). The metric is the official ``calpercloss`` (``photonics/utils.py``, "used for evaluation
of bandstructures"): :func:`fractional_error`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from essl.photonics.solver import Bands

__all__ = ["empty_lattice", "fractional_error", "full_grid_freqs", "official_kgrid", "official_order"]


def official_kgrid(nk: int = 25) -> np.ndarray:
    """SIB-CL's k-grid in its stored order: row ``iy * nk + ix`` is ``(k[ix], k[iy])``, ``k = -1/2 + (i + 1/2)/nk``."""
    k1 = -0.5 + (np.arange(nk) + 0.5) / nk
    gx, gy = np.meshgrid(k1, k1)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def official_order(nk: int = 25) -> np.ndarray:
    """Rows of essl's :func:`~essl.photonics.symmetry.kgrid` (``i * nk + j`` is ``(k[i], k[j])``) in the official
    order: ``essl_grid[official_order(nk)] == official_kgrid(nk)``."""
    iy, ix = np.divmod(np.arange(nk * nk), nk)
    return ix * nk + iy


def full_grid_freqs(bands: Bands) -> np.ndarray:
    """``(nk*nk, nbands)`` frequencies on the full grid, in the official k order."""
    if bands.orbit is None:
        raise ValueError("these bands carry no orbit map; compute them with band_structure()")
    return bands.freqs[bands.orbit[official_order(bands.nk)]]


def empty_lattice(kpoints: np.ndarray, epsavg: float, nbands: int = 10, span: int = 4) -> np.ndarray:
    """Lowest ``nbands`` frequencies ``|k + G| / √ε_avg`` (c/a) at each k of ``kpoints`` (units of 2π/a), ``G``
    over the reciprocal vectors with integer components in ``[-span, span]`` (enough for the lowest ten bands
    of the first Brillouin zone)."""
    m = np.arange(-span, span + 1)
    g = np.stack(np.meshgrid(m, m), -1).reshape(-1, 2)
    norms = np.linalg.norm(np.asarray(kpoints)[:, None, :] + g[None], axis=-1)
    return np.sort(norms, axis=1)[:, :nbands] / np.sqrt(epsavg)


def fractional_error(pred: Any, true: Any) -> Any:
    """The official band-structure metric ``calpercloss``: the mean over every entry of ``|pred − true| / true``,
    with the entries where that is infinite or NaN (a zero true frequency, at Γ) counted as 0.

    Works on numpy arrays or torch tensors.
    """
    if isinstance(pred, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.abs(pred - true) / true
        return np.where(np.isfinite(err), err, 0.0).mean()
    err = (pred - true).abs() / true
    return err.masked_fill(~err.isfinite(), 0.0).mean()
