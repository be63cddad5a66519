"""HDF5 layout of the E-SSL photonics files, writer helpers and the loader.

Layout (as read by rdangovs/essl ``photonics/phc_data.py``), one dataset per sample, indexed by a
1-based string integer ``i``:

=================================  =======================  ==================================
key                                value                    notes
=================================  =======================  ==================================
``unitcell/mpbepsimage/{i}``       (32, 32) float32         permittivity image, in [1, 20]
``unitcell/epsavg/{i}``            float32 scalar           mean of the stored image
``mpbcal/DOS/{i}``                 (500,) float32           labelled files only
``mpbcal/DOSn/{i}``                (500,) float32           ``DOS / sqrt(epsavg)``
``mpbcal/DOSeldiff/{i}``           (500,) float32           ``DOS - 2 pi w sqrt(epsavg)``
``mpbcal/DOSeldiffn/{i}``          (500,) float32           ``DOSn - 2 pi w``
``unitcell/{epsin,epsout}/{i}``    float64                  the two permittivities
``unitcell/{filling,uclevel}/{i}`` float64                  area fraction of eps_out, level
``unitcell/uccoefs/{i}``           complex128 (2F+1, 2F+1)  symmetrised Fourier coefficients
``mpbcal/efreq/{i}``               (625, 10) float32        ``--store-bands``: frequencies on the
                                                            full 25x25 grid, official k order
``mpbcal/emptylattice/{i}``        (625, 10) float32        ``--store-bands``: homogeneous crystal
``mpbcal/eldiff/{i}``              (625, 10) float32        ``efreq - emptylattice``
``mpbcal/wedge/{kpoints,kweights,  float32                  ``--store-bands``: solver data on the
efreq,grpvel}/{i}``                                         reduced grid
=================================  =======================  ==================================

The band-structure keys are those the official loader reads with ``predict='bandstructures'``
(:mod:`essl.photonics.bands`).

File attributes hold the generation metadata (family, seed, label settings, planned index range
and ``complete``).  ``w = linspace(0, 1.2, 500)``.

The loader (:func:`load_phc`) reads a file the way the original ``PhC2D``
(``rdangovs/essl/photonics/phc_data.py``) does: ``x = (eps - 1) / 19`` with a channel axis,
``y = DOS[:400] / sqrt(epsavg)``, ``EL = 2 pi w[:400]`` and ``ELdiff = y - EL``, as float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from essl.errors import EsslError
from essl.photonics.dos import TARGET_POINTS, label_frequencies

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "PhCData",
    "essl_indices",
    "load_phc",
    "load_phc_split",
    "present_indices",
    "read_file_attrs",
    "write_sample",
]

IMAGE_KEY = "unitcell/mpbepsimage"
EPSAVG_KEY = "unitcell/epsavg"
DOS_KEY = "mpbcal/DOS"
#: Band-structure keys (``predict='bandstructures'`` of the official loader): target, empty lattice, difference.
BAND_KEYS = ("mpbcal/efreq", "mpbcal/emptylattice", "mpbcal/eldiff")
#: Regression targets: the DOS (the paper's) or the band structures; the key a labelled sample must have.
TARGET_KEYS = {"dos": DOS_KEY, "bands": BAND_KEYS[0]}


@dataclass(frozen=True)
class DatasetSpec:
    """One E-SSL photonics file: name, contents and the index range the original code reads.

    Attributes:
        name: preset name used by ``essl phc generate --dataset``.
        file: original file name.
        family: cell family (:data:`essl.photonics.cells.FAMILIES`).
        start, count: indices ``start .. start + count - 1`` are generated.
        labels: whether ``mpbcal/DOS`` is computed.
        seed: default generation seed; presets differ so no two files share cells.
    """

    name: str
    file: str
    family: str
    start: int
    count: int
    labels: bool
    seed: int

    @property
    def stop(self) -> int:
        """One past the last index."""
        return self.start + self.count


#: The five E-SSL files (section 2 table).  Blob cells are a documented stand-in.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("gpm", "mf1-sg3-tm.h5", "gpm", 1, 9800, True, 1),
        DatasetSpec("gpm-ul", "mf1-sg3-25k-ul-s99-tm.h5", "gpm", 1, 20480, False, 99),
        DatasetSpec("blob", "sq-blob-v3-tm.h5", "blob", 1, 5099, True, 1),
        DatasetSpec("blob-test", "sq-blob-test2k-tm.h5", "blob", 1, 1999, True, 2),
        DatasetSpec("blob-ul", "sq-blob-ul-15k-tm.h5", "blob", 1, 15000, False, 99),
    )
}

#: (dataset, split) -> preset, as chosen by ``PhC2D``.
_SPLIT_PRESET = {
    ("gpm", "train"): "gpm",
    ("gpm", "test"): "gpm",
    ("gpm", "unlabeled"): "gpm-ul",
    ("blob", "train"): "blob",
    ("blob", "test"): "blob-test",
    ("blob", "unlabeled"): "blob-ul",
}


def _generate_hint(path: Path) -> str:
    for spec in DATASETS.values():
        if spec.file == path.name:
            return f"generate it with `essl phc generate --dataset {spec.name} --out-dir {path.parent}`"
    return f"generate it with `essl phc generate --family FAMILY --n N --out-dir {path.parent} --out-file {path.name}`"


# ----------------------------------------------------------------------------- writing


def write_sample(
    h5: Any,
    index: int,
    image: np.ndarray,
    epsavg: float,
    dos: np.ndarray | None = None,
    extras: dict[str, Any] | None = None,
) -> None:
    """Write one sample in the layout of the module docstring (overwriting stale keys).

    ``extras`` maps keys such as ``"unitcell/epsin"`` to values.  The required keys are
    written last (``mpbcal/DOS`` last of all), so a sample interrupted half-way is not counted
    by :func:`present_indices`.
    """
    name = str(int(index))
    items: list[tuple[str, Any]] = list((extras or {}).items())
    if dos is not None:
        dos = np.asarray(dos, dtype=np.float32)
        root = np.float32(np.sqrt(epsavg))
        w = label_frequencies().astype(np.float32)
        dosn = dos / root
        items += [
            ("mpbcal/DOSn", dosn),
            ("mpbcal/DOSeldiff", dos - np.float32(2 * np.pi) * w * root),
            ("mpbcal/DOSeldiffn", dosn - np.float32(2 * np.pi) * w),
        ]
    items += [(IMAGE_KEY, np.asarray(image, dtype=np.float32)), (EPSAVG_KEY, np.float32(epsavg))]
    if dos is not None:
        items.append((DOS_KEY, dos))
    for group, value in items:
        key = f"{group}/{name}"
        if key in h5:
            del h5[key]
        h5.create_dataset(key, data=value)


def present_indices(h5: Any, labels: bool, target: str = "dos") -> set[int]:
    """Indices whose required keys are all present (image, epsavg and, if ``labels``, the ``target``'s label:
    DOS, or band structures)."""
    import h5py

    def keys(group: str) -> set[int]:
        obj = h5.get(group)
        if obj is None:
            return set()
        if not isinstance(obj, h5py.Group):
            raise EsslError(
                f"{h5.filename}: '{group}' is a dataset where a group is expected (one dataset per "
                f"sample, '{group}/1', '{group}/2', ...); regenerate the file in the E-SSL layout."
            )
        bad = [k for k in obj.keys() if not k.isdigit()]
        if bad:
            raise EsslError(
                f"{h5.filename}: '{group}' holds {bad[0]!r}, not a sample index; the E-SSL layout "
                f"names samples '{group}/1', '{group}/2', ..."
            )
        return {int(k) for k in obj.keys()}

    have = keys(IMAGE_KEY) & keys(EPSAVG_KEY)
    if not labels:
        return have
    for key in (DOS_KEY,) if target == "dos" else BAND_KEYS:
        have &= keys(key)
    return have


def read_file_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The root attributes of an h5 file (generation metadata), as plain Python values."""
    import h5py

    with h5py.File(path, "r") as h5:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}


# ----------------------------------------------------------------------------- loading


@dataclass
class PhCData:
    """Samples read from a photonics file, as the original ``PhC2D`` holds them.

    Attributes:
        x: ``(n, 1, 32, 32)`` float32 tensor, ``(eps - 1) / 19``.
        y: ``(n, 400)`` float32 tensor ``DOS[:400] / sqrt(epsavg)`` (``None`` if unlabelled); for the
            ``bands`` target the ``(n, k-points * bands)`` frequencies.
        el: ``(400,)`` float32 tensor ``2 pi w``; for ``bands`` the ``(n, k-points * bands)`` empty lattice.
        eldiff: ``y - el`` (``None`` if unlabelled); the default E-SSL regression target.
        epsavg: ``(n,)`` float32 tensor.
        indices: the h5 indices read, in order.
    """

    x: Any
    y: Any
    el: Any
    eldiff: Any
    epsavg: Any
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _read_number_array(h5: Any, key: str, path: Path) -> np.ndarray:
    """The real numbers stored at ``key``; a missing key, a group, text or complex values are errors."""
    import h5py

    obj = h5.get(key)
    if obj is None:
        raise EsslError(
            f"{path}: key '{key}' is missing (expected the E-SSL layout with 1-based indices); {_generate_hint(path)}"
        )
    if not isinstance(obj, h5py.Dataset):
        raise EsslError(
            f"{path}: '{key}' is a group where a dataset is expected; regenerate the file in the E-SSL "
            f"layout ({_generate_hint(path)})."
        )
    value = np.asarray(obj[()])
    if value.dtype.kind == "c":
        raise EsslError(
            f"{path}: '{key}' holds complex numbers ({value.dtype}); permittivities must be real "
            f"(complex, lossy permittivities are not supported); store the real part explicitly if "
            f"that is what you mean."
        )
    if value.dtype.kind not in "fiu":
        raise EsslError(
            f"{path}: '{key}' holds {value.dtype} values, expected real numbers (float32); regenerate "
            f"the file ({_generate_hint(path)})."
        )
    return value


def load_phc(
    path: str | os.PathLike[str],
    indices: Any = None,
    labelled: bool = True,
    ldos: int = 0,
    udos: int = TARGET_POINTS,
    target: str = "dos",
    nbands: int = 10,
) -> PhCData:
    """Read samples of an E-SSL photonics file into torch tensors (the ``PhC2D`` recipe).

    Args:
        path: the ``.h5`` file.
        indices: 1-based indices to read; default all present, in increasing order.
        labelled: read the labels and build ``y`` (``False`` for unlabelled files).
        ldos, udos: slice of the DOS used as the target (``0:400`` in E-SSL).
        target: ``dos`` (the paper's) or ``bands``: ``y = efreq[:, :nbands]``, ``el = emptylattice[:, :nbands]``,
            ``eldiff = eldiff[:, :nbands]`` (``predict='bandstructures'``), each flattened to one row per sample
            (``el`` is then per sample).
        nbands: bands of the ``bands`` target.

    Raises:
        EsslError: missing or unreadable file, a missing key, or a wrong shape; the message
            names what was expected and the command that generates the file.
    """
    import h5py
    import torch

    path = Path(path)
    if not path.is_file():
        raise EsslError(f"photonics file {path} does not exist; {_generate_hint(path)}")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise EsslError(
            f"cannot read {path} as HDF5 ({err}); the file is corrupt or "
            f"incomplete: delete it and {_generate_hint(path)}"
        ) from None
    with h5:
        if indices is None:
            indices = sorted(present_indices(h5, labels=labelled, target=target))
            if not indices:
                raise EsslError(
                    f"{path} holds no complete samples (expected '{IMAGE_KEY}/i', "
                    f"'{EPSAVG_KEY}/i'{', ' + TARGET_KEYS[target] + '/i' if labelled else ''}); "
                    f"{_generate_hint(path)}"
                )
        idx = np.asarray(list(indices), dtype=np.int64)
        images: list[np.ndarray] = []
        eps: list[float] = []
        dos: list[Any] = []
        for i in idx:
            img = _read_number_array(h5, f"{IMAGE_KEY}/{i}", path)
            if img.ndim != 2 or img.shape[0] != img.shape[1]:
                raise EsslError(
                    f"{path}: '{IMAGE_KEY}/{i}' has shape {img.shape}, expected a square image such as (32, 32)"
                )
            if images and img.shape != images[0].shape:
                raise EsslError(
                    f"{path}: '{IMAGE_KEY}/{i}' is {img.shape[0]}×{img.shape[1]} but "
                    f"'{IMAGE_KEY}/{idx[0]}' is {images[0].shape[0]}×{images[0].shape[1]}; all unit "
                    f"cells of a file must have the same size (32×32 in E-SSL): remove or regenerate "
                    f"sample {i}."
                )
            images.append(img)
            e = _read_number_array(h5, f"{EPSAVG_KEY}/{i}", path)
            if e.size != 1:
                raise EsslError(
                    f"{path}: '{EPSAVG_KEY}/{i}' has shape {e.shape}, expected a single number (the "
                    f"mean permittivity of the cell); regenerate sample {i}."
                )
            eps.append(float(e.reshape(())))
            if labelled and target == "bands":
                dos.append([_read_bands(h5, f"{key}/{i}", path, nbands) for key in BAND_KEYS])
            elif labelled:
                d = _read_number_array(h5, f"{DOS_KEY}/{i}", path)
                if d.ndim != 1 or d.shape[0] < udos:
                    raise EsslError(f"{path}: '{DOS_KEY}/{i}' has shape {d.shape}, expected (500,)")
                dos.append(d[ldos:udos])
    epsavg = np.asarray(eps, dtype=np.float64)
    x = ((np.stack(images).astype(np.float32) - 1) / 19)[:, None]
    el = (2 * np.pi * label_frequencies()[ldos:udos]).astype(np.float32)
    y = eldiff = None
    if labelled and target == "bands":
        y_np, el, ed = (np.stack([d[j] for d in dos]).astype(np.float32) for j in range(3))
        y, eldiff = torch.from_numpy(y_np), torch.from_numpy(ed)
    elif labelled:
        y_np = (np.stack(dos) / np.sqrt(epsavg)[:, None]).astype(np.float32)
        y = torch.from_numpy(y_np)
        eldiff = torch.from_numpy((y_np - el).astype(np.float32))
    return PhCData(
        x=torch.from_numpy(np.ascontiguousarray(x)),
        y=y,
        el=torch.from_numpy(el),
        eldiff=eldiff,
        epsavg=torch.from_numpy(epsavg.astype(np.float32)),
        indices=idx,
    )


def _read_bands(h5: Any, key: str, path: Path, nbands: int) -> np.ndarray:
    """``key`` (``(nk*nk, bands)``) restricted to the first ``nbands`` bands and flattened."""
    if key not in h5:
        raise EsslError(
            f"{path}: '{key}' is missing; the band-structure target needs files generated with "
            f"`essl phc generate ... --store-bands`."
        )
    value = _read_number_array(h5, key, path)
    if value.ndim != 2 or value.shape[1] < nbands:
        raise EsslError(f"{path}: '{key}' has shape {value.shape}, expected (k-points, >= {nbands} bands).")
    return value[:, :nbands].reshape(-1)


def essl_indices(dataset: str, split: str, nsam: int = 3000, seed: int = 1) -> np.ndarray:
    """The h5 indices the original E-SSL code reads (section 2 "Files and indices").

    ``train``: ``nsam`` indices drawn without replacement from ``1..5099`` (blob) or
    ``1..7799`` (gpm) by ``np.random.choice`` right after ``np.random.seed(seed)``; the same
    subset for every fine-tuning seed.  ``test``: ``1..1999`` of the blob test file, or
    ``7801..9800`` of the gpm file.  ``unlabeled``: ``1..15000`` (blob) or ``1..20480`` (gpm).
    """
    if dataset not in ("blob", "gpm"):
        raise EsslError(f"dataset must be 'blob' or 'gpm', got {dataset!r}")
    if split == "train":
        pool_end = 5100 if dataset == "blob" else 7800
        return np.random.RandomState(seed).choice(np.arange(1, pool_end), nsam, replace=False)
    if split == "test":
        return np.arange(1, 2000) if dataset == "blob" else np.arange(7801, 9801)
    if split == "unlabeled":
        return np.arange(1, 15001) if dataset == "blob" else np.arange(1, 20481)
    raise EsslError(f"split must be 'train', 'test' or 'unlabeled', got {split!r}")


def load_phc_split(
    h5_dir: str | os.PathLike[str], dataset: str, split: str, nsam: int = 3000, seed: int = 1
) -> PhCData:
    """Load one split of ``blob`` or ``gpm`` from the original file names in ``h5_dir``.

    File and indices as in ``PhC2D`` / ``main.py`` (:func:`essl_indices`).
    """
    indices = essl_indices(dataset, split, nsam, seed)
    spec = DATASETS[_SPLIT_PRESET[(dataset, split)]]
    return load_phc(Path(h5_dir) / spec.file, indices, labelled=split != "unlabeled")
