"""Point-group symmetry of pixel unit cells and the symmetry-reduced k-grid.

Conventions (shared by every module of :mod:`essl.photonics`):

* A unit cell is a square ``N x N`` image ``img[i, j]``; axis 0 is ``x`` and axis 1 is ``y``.
  Pixel ``(i, j)`` covers ``[i/N, (i+1)/N) x [j/N, (j+1)/N)`` of the unit square (lattice
  constant ``a = 1``), so its centre is at ``((i + 1/2)/N, (j + 1/2)/N)``.
* The square lattice's point group is D4 (8 operations).  An operation is a 2x2 signed
  permutation matrix ``R`` acting on positions about the pixel corner at the origin.  Every
  symmetry of a pixel image is such an ``R`` followed by a translation by whole pixels, because
  it must map the pixel grid onto itself (see docs/photonics.md, "What is implemented").
* Reciprocal vectors and Bloch vectors ``k`` are in units of ``2*pi/a``.  Since ``R`` is
  orthogonal, a real-space symmetry ``r -> R r + t`` gives ``omega(R k) = omega(k)``; time
  reversal adds ``omega(-k) = omega(k)``.

The k-grid is the SIB-CL 25 x 25 grid ``k = -1/2 + (i + 1/2)/nk`` (reference section 4,
step 1).  It is reduced to its irreducible wedge using only the symmetry *verified on the image*
(:func:`detect_point_group`), with orbit sizes as weights.  The GGR DOS only uses the frequency
and the sorted ``|v_x|, |v_y|`` of each point, which every D4 operation preserves, so the
weighted wedge gives the same DOS as the full grid (reference section 7.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "D4",
    "GROUPS",
    "PointGroup",
    "apply_op",
    "detect_point_group",
    "kgrid",
    "kgrid_orbits",
    "reduce_kgrid",
]

#: The 8 operations of D4 as integer matrices, identity first.
D4: tuple[np.ndarray, ...] = tuple(
    np.array(m, dtype=np.int64)
    for m in (
        [[1, 0], [0, 1]],  # identity
        [[-1, 0], [0, -1]],  # C2 (inversion in 2D)
        [[0, -1], [1, 0]],  # C4
        [[0, 1], [-1, 0]],  # C4^3
        [[-1, 0], [0, 1]],  # mirror x -> -x  (flip of image axis 0)
        [[1, 0], [0, -1]],  # mirror y -> -y  (flip of image axis 1)
        [[0, 1], [1, 0]],  # diagonal mirror (transpose)
        [[0, -1], [-1, 0]],  # anti-diagonal mirror
    )
)

#: Point groups the cell families are built with (matrices drawn from :data:`D4`).
GROUPS: dict[str, tuple[np.ndarray, ...]] = {
    "p1": (D4[0],),
    "pm": (D4[0], D4[4]),
    "p2": (D4[0], D4[1]),
    "p4mm": D4,
}


def apply_op(img: np.ndarray, op: np.ndarray) -> np.ndarray:
    """Return the image transformed by the point operation ``op`` about the origin corner.

    The result ``out`` satisfies ``out(R r) = img(r)`` for every pixel centre ``r`` (positions
    measured from the corner of pixel ``(0, 0)``, taken modulo the cell).  ``R`` is factored as
    ``S P`` with ``P`` a permutation (identity or transpose) and ``S`` a diagonal sign matrix
    (flips).
    """
    op = np.asarray(op)
    if op[0, 0] != 0:
        out, signs = img, (op[0, 0], op[1, 1])
    else:
        out, signs = img.T, (op[0, 1], op[1, 0])
    if signs[0] < 0:
        out = out[::-1, :]
    if signs[1] < 0:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class PointGroup:
    """The verified symmetry of an image.

    Attributes:
        ops: the D4 matrices ``R`` such that ``img(r) = img(R^-1 (r - t))`` for some whole-pixel
            translation ``t`` (always contains the identity).
        shifts: the translation ``t`` (pixels, along axes 0 and 1) found for each op.
        inversion_centre: centre ``r0`` (in units of the lattice constant, measured from the
            corner of pixel ``(0, 0)``) of the inversion ``r -> 2 r0 - r`` if the image has one,
            else ``None``.
    """

    ops: tuple[np.ndarray, ...]
    shifts: tuple[tuple[int, int], ...]
    inversion_centre: tuple[float, float] | None

    @property
    def order(self) -> int:
        """Number of operations."""
        return len(self.ops)

    @property
    def name(self) -> str:
        """Short name of the group (by order and content), e.g. ``"pm"`` or ``"p4mm"``."""
        mats = {tuple(op.ravel()) for op in self.ops}
        has_c2 = tuple(D4[1].ravel()) in mats
        has_c4 = tuple(D4[2].ravel()) in mats
        n_mirror = sum(tuple(D4[i].ravel()) in mats for i in (4, 5, 6, 7))
        if has_c4:
            return "p4mm" if n_mirror else "p4"
        if has_c2:
            return "p2mm" if n_mirror else "p2"
        return "pm" if n_mirror else "p1"


def _best_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Whole-pixel cyclic shift ``s`` maximising the correlation of ``a`` with ``roll(b, s)``.

    If any shift makes them equal it attains the maximum (Cauchy-Schwarz), so checking only
    the maximiser is enough to decide whether ``a`` is a translate of ``b``.
    """
    fa = np.fft.rfft2(a - a.mean())
    fb = np.fft.rfft2(b - b.mean())
    corr = np.fft.irfft2(fa * np.conj(fb), s=a.shape)
    i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return int(i), int(j)


def detect_point_group(img: np.ndarray, atol: float = 1e-6) -> PointGroup:
    """Find which D4 operations (each up to a whole-pixel translation) leave ``img`` unchanged.

    An operation counts only if the transformed, translated image equals ``img`` to within
    ``atol`` at every pixel, so the k-grid is never reduced by a symmetry the image lacks.

    Args:
        img: square 2D array of permittivities.
        atol: absolute tolerance on each pixel (the generated cells are exactly symmetric).
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] != img.shape[1]:
        raise ValueError(f"expected a square 2D image, got shape {img.shape}")
    ops, shifts = [], []
    centre = None
    for op in D4:
        moved = apply_op(img, op)
        s = _best_shift(img, moved)
        if np.max(np.abs(np.roll(moved, s, axis=(0, 1)) - img)) <= atol:
            ops.append(op)
            shifts.append(s)
            if op[0, 0] == -1 and op[1, 1] == -1:
                # img(r) = moved(r - s) = img(s - r): inversion about r0 = s / 2 (pixels).
                n = img.shape[0]
                centre = (s[0] / (2.0 * n), s[1] / (2.0 * n))
    return PointGroup(tuple(ops), tuple(shifts), centre)


def kgrid(nk: int = 25) -> np.ndarray:
    """The SIB-CL ``nk x nk`` k-grid, ``k = -1/2 + (i + 1/2)/nk``, as an ``(nk*nk, 2)`` array.

    Row ``i * nk + j`` holds ``(k_x[i], k_y[j])`` (the 25 × 25 k-grid of clott3/SIB-CL).
    """
    k1 = -0.5 + (np.arange(nk) + 0.5) / nk
    kx, ky = np.meshgrid(k1, k1, indexing="ij")
    return np.stack([kx.ravel(), ky.ravel()], axis=1)


def reduce_kgrid(
    ops: tuple[np.ndarray, ...] | list[np.ndarray], nk: int = 25, time_reversal: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce the :func:`kgrid` to one point per orbit of the point group (plus time reversal).

    The grid is closed under D4 and ``k -> -k`` (its points are symmetric about 0), so orbits
    are computed exactly on integer grid coordinates.  Weights are orbit sizes; they sum to
    ``nk**2``.

    Returns:
        ``(kpoints, weights)``: ``(m, 2)`` float array and ``(m,)`` float array.
    """
    kpoints, weights, _ = kgrid_orbits(ops, nk, time_reversal)
    return kpoints, weights


def kgrid_orbits(
    ops: tuple[np.ndarray, ...] | list[np.ndarray], nk: int = 25, time_reversal: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`reduce_kgrid` plus, for every point of the full :func:`kgrid`, the row of its orbit's
    representative in the reduced arrays (``(nk*nk,)`` ints): frequencies are the same on a whole
    orbit, so ``freqs_reduced[orbit]`` are the frequencies on the full grid."""
    group = [np.asarray(op, dtype=np.int64) for op in ops]
    if time_reversal:
        group = group + [-op for op in group]
    # Integer coordinates u = 2*nk*k, i.e. u = 2*i + 1 - nk (odd nk: even integers; any nk: exact).
    idx = np.arange(nk)
    u1 = 2 * idx + 1 - nk
    ux, uy = np.meshgrid(u1, u1, indexing="ij")
    u = np.stack([ux.ravel(), uy.ravel()], axis=1)
    to_index = {(int(a), int(b)): n for n, (a, b) in enumerate(u)}
    rep = np.empty(len(u), dtype=np.int64)
    for n, vec in enumerate(u):
        images = [to_index[(int(a), int(b))] for a, b in (op @ vec for op in group)]
        rep[n] = min(images)
    reps, orbit, counts = np.unique(rep, return_inverse=True, return_counts=True)
    return kgrid(nk)[reps], counts.astype(np.float64), orbit
