"""Density of states: bin-integrated GGR, the ``mpbcal/DOS`` label, and the E-SSL target/metric.

Recipe (clott3/SIB-CL ``compute_DOS/*`` and ``addDOSintoh5.py``; the GGR method of Liu, Johnson, Joannopoulos
and Lu, J. Opt. 20, 044005, 2018, code boyuanliuoptics/DOS-calculation):

1. **GGR** (generalized Gilat-Raubenheimer, Liu et al., J. Opt. 20, 044005 (2018)).  Each
   ``(k, band)`` of the ``nk x nk`` grid represents a square of side ``2h``, ``h = 1/(2 nk)``, over
   which the band is linear, ``f + v.q``.  With ``v1 >= v2`` the sorted ``|v_x|, |v_y|`` its
   frequency density is the trapezoid (section 4, step 3)::

       g(d) = 2h / v1                           |d| <= h (v1 - v2)
            = (h (v1 + v2) - |d|) / (v1 v2)      h (v1 - v2) < |d| < h (v1 + v2)
            = 0                                  otherwise

   which integrates to ``(2h)^2``.  The **bin-integrated** ("conservative") variant integrates
   ``g`` exactly over each of ``nbins`` bins on ``[0, w_max]``, ``w_max = 1.05 max f``, through its
   closed-form antiderivative, so the total weight is exactly the number of bands (the MATLAB
   point sampling aliases narrow trapezoids, section 7.1).  Velocity components with
   ``h |v| < 1e-6 * bin width`` are treated as exactly zero (box or delta), which removes the
   negative bins that a ``1e-16`` component would otherwise cause (section 7.5).  Weight that
   would fall below 0 or above ``w_max`` is kept in the first / last bin.
2. **Smoothing**: ``gaussian_filter1d(sigma = 100 bins)`` (SIB-CL ``addDOSintoh5.py``).
3. **Rescaling**: the frequency axis is multiplied by ``sqrt(epsavg)`` (the mean of the image),
   then the DOS is interpolated onto ``linspace(0, 1.2, 500)`` (held constant beyond the ends,
   ``np.interp``).  The result, states per unit cell per unit ``f`` at ``w = f sqrt(epsavg)``, is
   ``mpbcal/DOS``.

E-SSL target and metric (section 2): ``y = DOS[:400] / sqrt(epsavg)``; ``EL = 2 pi w[:400]`` (the
empty-lattice value of ``y``); error ``= mean_samples sum_{i=100}^{399} |y_hat - y| / sum |y|``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "DOS_POINTS",
    "DOS_WMAX",
    "METRIC_START",
    "TARGET_POINTS",
    "dos_label",
    "dos_target",
    "empty_lattice",
    "ggr_dos",
    "label_frequencies",
    "relative_l1",
    "smooth_and_rescale",
]

#: Points of the stored DOS label and the end of its frequency axis (``w = f sqrt(epsavg)``).
DOS_POINTS = 500
DOS_WMAX = 1.2
#: Points used as the regression target, and the first point of the error metric.
TARGET_POINTS = 400
METRIC_START = 100


def label_frequencies() -> np.ndarray:
    """The label's frequency axis ``w = linspace(0, 1.2, 500)`` (``w = f sqrt(epsavg)``)."""
    return np.linspace(0.0, DOS_WMAX, DOS_POINTS)


def _trapezoid_cdf(delta: np.ndarray, h: float, v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """Antiderivative ``G(d) = int_{-inf}^{d} g`` of the GGR trapezoid (weight ``4 h^2``).

    ``v1 >= v2 >= 0``; ``v2 == 0`` gives a box of half-width ``h v1`` and ``v1 == 0`` a step
    (a delta in the density).  Monotone in ``d`` and clipped to ``[0, 4 h^2]``.
    """
    total = 4.0 * h * h
    a = h * (v1 - v2)
    c = h * (v1 + v2)
    t = np.clip(delta, -c, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv2 = np.where(v2 > 0, 0.5 / (v1 * v2), 0.0)
        slope = np.where(v1 > 0, 2.0 * h / v1, 0.0)
        ratio = np.where(v1 > 0, v2 / v1, 0.0)
    left = (t + c) ** 2 * inv2
    middle = 2.0 * h * h * ratio + (t + a) * slope
    right = total - (c - t) ** 2 * inv2
    out = np.where(t <= -a, left, np.where(t < a, middle, right))
    out = np.where(v2 > 0, out, middle)  # box: only the middle branch exists
    out = np.where(v1 > 0, out, np.where(delta >= 0, total, 0.0))  # delta function
    return np.clip(out, 0.0, total)


def ggr_dos(
    freqs: np.ndarray,
    vels: np.ndarray,
    weights: np.ndarray,
    nk: int = 25,
    nbins: int = 20000,
    wmax: float | None = None,
    zero_tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Bin-integrated GGR density of states (step 1 of the module recipe).

    Args:
        freqs: ``(m, nb)`` band frequencies at the (reduced) k-points.
        vels: ``(m, nb, 2)`` group velocities ``df/dk``.
        weights: ``(m,)`` orbit sizes (``nk**2`` in total for the full grid).
        nk: k-grid size per axis, sets ``h = 1/(2 nk)`` and the normalisation.
        nbins: number of frequency bins.
        wmax: upper end of the bins; default ``1.05 * freqs.max()``.
        zero_tol: a velocity component with ``h |v| < zero_tol * bin width`` counts as zero.

    Returns:
        ``(centres, dos)``: bin centres and the DOS (states per unit cell per unit ``f``) in each
        bin; ``sum(dos) * bin width == nb * sum(weights) / nk**2`` exactly up to rounding.
    """
    freqs = np.asarray(freqs, dtype=np.float64)
    vels = np.asarray(vels, dtype=np.float64)
    nb = freqs.shape[1]
    if wmax is None:
        wmax = 1.05 * float(freqs.max())
    if not wmax > 0:
        raise ValueError("all frequencies are zero; cannot build a DOS grid")
    step = wmax / nbins
    h = 0.5 / nk
    f = freqs.ravel()
    av = np.abs(vels.reshape(-1, 2))
    v1 = av.max(axis=1)
    v2 = av.min(axis=1)
    tiny = zero_tol * step / h
    v1 = np.where(v1 < tiny, 0.0, v1)
    v2 = np.where(v2 < tiny, 0.0, v2)
    w = np.repeat(np.asarray(weights, dtype=np.float64), nb) / (nk * nk * 4.0 * h * h)

    c = h * (v1 + v2)
    lo = np.clip(np.floor((f - c) / step).astype(np.int64), 0, nbins - 1)
    hi = np.clip(np.floor((f + c) / step).astype(np.int64), 0, nbins - 1)
    n_edges = hi - lo + 2
    item = np.repeat(np.arange(f.size), n_edges)
    first = np.cumsum(n_edges) - n_edges
    edge = lo[item] + (np.arange(item.size) - first[item])
    pos = edge * step
    pos = np.where(edge == 0, -np.inf, np.where(edge == nbins, np.inf, pos))
    cdf = _trapezoid_cdf(pos - f[item], h, v1[item], v2[item])
    # Bin value = difference of the antiderivative between consecutive edges of one item.
    inner = np.ones(item.size, dtype=bool)
    inner[first + n_edges - 1] = False
    diff = np.maximum(cdf[1:] - cdf[:-1], 0.0)[inner[:-1]]
    bins = edge[:-1][inner[:-1]]
    dos = np.bincount(bins, weights=diff * w[item[:-1][inner[:-1]]], minlength=nbins) / step
    centres = (np.arange(nbins) + 0.5) * step
    return centres, dos


def smooth_and_rescale(centres: np.ndarray, dos: np.ndarray, epsavg: float, sigma_bins: float = 100.0) -> np.ndarray:
    """Steps 2-3: gaussian smoothing (``sigma`` in bins), ``f -> f sqrt(epsavg)``, interpolation.

    Returns the ``(500,)`` float32 ``mpbcal/DOS`` label on :func:`label_frequencies`.
    """
    from scipy.ndimage import gaussian_filter1d  # a second's import on a loaded machine; only labelling needs it

    smooth = gaussian_filter1d(np.asarray(dos, dtype=np.float64), sigma_bins)
    axis = np.asarray(centres, dtype=np.float64) * np.sqrt(float(epsavg))
    return np.interp(label_frequencies(), axis, smooth).astype(np.float32)


def dos_label(
    freqs: np.ndarray,
    vels: np.ndarray,
    weights: np.ndarray,
    epsavg: float,
    nk: int = 25,
    nbins: int = 20000,
    sigma_bins: float = 100.0,
) -> np.ndarray:
    """The full ``mpbcal/DOS`` label from band data: GGR, smoothing, rescaling (steps 1-3)."""
    centres, dos = ggr_dos(freqs, vels, weights, nk=nk, nbins=nbins)
    return smooth_and_rescale(centres, dos, epsavg, sigma_bins)


def _backend(x: Any) -> Any:
    """``torch`` for tensors, ``numpy`` otherwise (the helpers accept either)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def dos_target(dos: Any, epsavg: Any) -> Any:
    """E-SSL target ``y = DOS[..., :400] / sqrt(epsavg)`` (section 2; ``PhC2D``).

    ``dos`` is ``(..., 500)``; ``epsavg`` a scalar or ``(...)`` array/tensor.
    """
    xp = _backend(dos)
    if xp is np:
        root = np.sqrt(np.asarray(epsavg, dtype=np.float64))
    else:
        root = xp.sqrt(xp.as_tensor(epsavg, dtype=dos.dtype, device=dos.device))
    if root.ndim:
        root = root[..., None]
    return dos[..., :TARGET_POINTS] / root


def empty_lattice() -> np.ndarray:
    """``EL = 2 pi w`` for ``w = linspace(0, 1.2, 500)[:400]``, float32: ``y`` of a uniform cell."""
    return (2.0 * np.pi * label_frequencies()[:TARGET_POINTS]).astype(np.float32)


def relative_l1(pred: Any, true: Any, start: int = METRIC_START) -> Any:
    """E-SSL DOS error: mean over samples of ``sum_{i>=start} |pred - true| / sum |true|``.

    Works on numpy arrays or torch tensors of shape ``(n, 400)`` (or ``(400,)``).
    """
    xp = _backend(pred)
    err = xp.abs(pred[..., start:] - true[..., start:]).sum(-1)
    ref = xp.abs(true[..., start:]).sum(-1)
    return (err / ref).mean()
