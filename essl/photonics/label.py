"""Image -> ``mpbcal/DOS`` label: the whole labelling pipeline (docs/photonics.md).

``label_image`` = symmetry detection + PWE bands on the reduced 25 x 25 grid (:mod:`.solver`)
+ bin-integrated GGR, smoothing and rescaling (:mod:`.dos`).  The label of an image depends only
on the image (piecewise-constant pixels, section 7.2 "Recommendation") and the
:class:`LabelConfig`; ``epsavg`` is the mean of the image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from essl.errors import EsslError
from essl.photonics.dos import dos_label
from essl.photonics.parallel import imap_workers
from essl.photonics.solver import Bands, band_structure

__all__ = ["EPS_MAX", "EPS_MIN", "Label", "LabelConfig", "check_images", "iter_labels", "label_image", "label_images"]

#: Permittivity range of the E-SSL data (the loader normalises with ``(eps - 1) / 19``).
EPS_MIN, EPS_MAX = 1.0, 20.0


@dataclass(frozen=True)
class LabelConfig:
    """Settings of the labelling pipeline; the defaults reproduce the E-SSL label definition.

    Attributes:
        cutoff: plane-wave cutoff ``M`` (10 -> 317 plane waves; 7 is a "fast" setting).
        nbands: bands per k-point.
        nk: k-grid size per axis.
        nbins: GGR frequency bins.
        sigma_bins: gaussian smoothing width, in bins.
        symmetry: k-grid reduction, ``"auto"`` (verified on the image), ``"time-reversal"``
            or ``"none"``.
        method: eigensolver strategy, ``"auto"``, ``"dense"`` or ``"subspace"``.
    """

    cutoff: float = 10.0
    nbands: int = 10
    nk: int = 25
    nbins: int = 20000
    sigma_bins: float = 100.0
    symmetry: str = "auto"
    method: str = "auto"

    def as_attrs(self) -> dict[str, object]:
        """The settings as a flat dict (stored as h5 attributes)."""
        return asdict(self)


@dataclass
class Label:
    """A label with the band data it came from.

    Attributes:
        dos: ``(500,)`` float32 ``mpbcal/DOS``.
        epsavg: mean permittivity of the image used for the frequency rescaling.
        bands: the band data on the reduced grid.
    """

    dos: np.ndarray
    epsavg: float
    bands: Bands


def check_images(images: np.ndarray, res: int | None = 32) -> np.ndarray:
    """Validate a stack of permittivity images; return it as float64 ``(N, res, res)``.

    Raises :class:`~essl.errors.EsslError` for a wrong shape, non-finite values or values
    outside ``[1, 20]``, saying which sample is bad.
    """
    arr = np.asarray(images)
    if arr.dtype.kind not in "fiu":
        raise EsslError(f"permittivity images must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] != arr.shape[2] or (res is not None and arr.shape[1] != res):
        want = f"(N, {res}, {res})" if res is not None else "(N, R, R)"
        raise EsslError(f"permittivity images must have shape {want} with N >= 1, got {arr.shape}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr).all(axis=(1, 2))
    if bad.any():
        raise EsslError(
            f"permittivity images contain NaN or inf (first bad sample: index {int(np.argmax(bad))}, 0-based)"
        )
    out = (arr < EPS_MIN).any(axis=(1, 2)) | (arr > EPS_MAX).any(axis=(1, 2))
    if out.any():
        i = int(np.argmax(out))
        raise EsslError(
            f"permittivity must lie in [{EPS_MIN:g}, {EPS_MAX:g}]; sample {i} "
            f"(0-based) has values in [{arr[i].min():.6g}, {arr[i].max():.6g}]"
        )
    return arr


def label_image(image: np.ndarray, config: LabelConfig = LabelConfig()) -> Label:
    """Label one ``(N, N)`` permittivity image (section 4; pure function of image and config).

    Runs in the calling process with whatever BLAS threading it has; wrap calls in
    :func:`essl.photonics.parallel.blas_single_thread` (as :func:`label_images` does) for speed.
    """
    image = np.asarray(image, dtype=np.float64)
    epsavg = float(image.mean())
    bands = band_structure(
        image, nbands=config.nbands, cutoff=config.cutoff, nk=config.nk, symmetry=config.symmetry, method=config.method
    )
    dos = dos_label(
        bands.freqs, bands.vels, bands.weights, epsavg, nk=config.nk, nbins=config.nbins, sigma_bins=config.sigma_bins
    )
    return Label(dos=dos, epsavg=epsavg, bands=bands)


def _label_dos(args: tuple[np.ndarray, LabelConfig]) -> np.ndarray:
    return label_image(args[0], args[1]).dos


def iter_labels(images: np.ndarray, config: LabelConfig = LabelConfig(), workers: int = 1) -> Iterator[np.ndarray]:
    """Yield the ``(500,)`` label of each image in order (one BLAS thread per worker)."""
    return imap_workers(_label_dos, ((img, config) for img in images), workers)


def label_images(
    images: np.ndarray, config: LabelConfig = LabelConfig(), workers: int = 1, progress: bool = False
) -> np.ndarray:
    """Label a stack ``(N, 32, 32)`` of images; returns ``(N, 500)`` float32 (``mpbcal/DOS``).

    Inputs are validated with :func:`check_images` (raises :class:`~essl.errors.EsslError`).
    """
    arr = check_images(images)
    labels = iter_labels(arr, config, workers)
    if progress:
        from tqdm import tqdm

        labels = tqdm(labels, total=len(arr), unit="cell", desc="phc label")
    return np.stack(list(labels)).astype(np.float32)
