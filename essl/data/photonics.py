"""Which cells each stage of the photonics experiment reads (rdangovs/essl
``photonics/phc_data.py``, ``main.py``).

Files are looked up by their original E-SSL names in one data folder (``data_root``), as written by
``essl phc generate`` (:data:`essl.photonics.h5io.DATASETS`):

| family | pretraining (unlabelled)                  | fine-tuning pool                     | test set                               |
|--------|-------------------------------------------|--------------------------------------|----------------------------------------|
| gpm    | ``mf1-sg3-25k-ul-s99-tm.h5``, 1..20480     | ``mf1-sg3-tm.h5``, 1..7799           | ``mf1-sg3-tm.h5``, 7801..9800          |
| blob   | ``sq-blob-ul-15k-tm.h5``, 1..15000         | ``sq-blob-v3-tm.h5``, 1..5099        | ``sq-blob-test2k-tm.h5``, 1..1999      |

Within each index window the indices *present* in the file are used, so smaller generated files work: the
pretraining set is every complete image in the window, the test set every labelled sample in its window, and
the fine-tuning set ``n_train`` indices drawn without replacement from the pool by
``np.random.RandomState(subset_seed).choice`` (seed 1, once, identical for every fine-tuning seed). With the
full pool present this is exactly the original ``pick_random_ftset`` draw
(:func:`essl.photonics.h5io.essl_indices`).

Samples are read with P's loader :func:`essl.photonics.h5io.load_phc` (``x = (ε − 1)/19``,
``y = DOS[:400]/√ε_avg``, ``EL = 2π·linspace(0, 1.2, 500)[:400]``); this module only chooses indices and
checks the result (32×32 images with ``x`` in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from essl.data.types import ImageData
from essl.errors import EsslError
from essl.photonics.h5io import BAND_KEYS, DATASETS, DOS_KEY, PhCData, load_phc, present_indices

FAMILIES = ("gpm", "blob")
CELL = 32


@dataclass(frozen=True)
class SplitSpec:
    """One split: the preset that names its file (:data:`DATASETS`) and the index window read from it."""

    preset: str
    first: int
    last: int
    labelled: bool

    @property
    def file(self) -> str:
        return DATASETS[self.preset].file


SPLITS: dict[tuple[str, str], SplitSpec] = {
    ("gpm", "unlabelled"): SplitSpec("gpm-ul", 1, 20480, False),
    ("gpm", "pool"): SplitSpec("gpm", 1, 7799, True),
    ("gpm", "test"): SplitSpec("gpm", 7801, 9800, True),
    ("blob", "unlabelled"): SplitSpec("blob-ul", 1, 15000, False),
    ("blob", "pool"): SplitSpec("blob", 1, 5099, True),
    ("blob", "test"): SplitSpec("blob-test", 1, 1999, True),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise EsslError(f"Unknown photonics family {family!r}; use 'gpm' or 'blob'.")


def _generate_command(spec: SplitSpec, root: Path, target: str = "dos") -> str:
    preset = DATASETS[spec.preset]
    what = "" if spec.labelled else " (images only, fast)"
    bands = " --store-bands" if target == "bands" and spec.labelled else ""
    return (
        f"`essl phc generate --dataset {spec.preset} --start-index {spec.first} --n N --out-dir {root} "
        f"--out-file {preset.file}{bands}`{what}"
    )


def present_in_window(family: str, split: str, root: str | Path | None, target: str = "dos") -> tuple[Path, list[int]]:
    """The file of ``split`` and its complete sample indices (with the ``target``'s labels, for labelled splits)
    inside the split's window (sorted)."""
    import h5py

    _check_family(family)
    spec = SPLITS[(family, split)]
    if not root:
        raise EsslError(
            f"The photonics data are read from a folder: set data_root=DIR (pretraining) or "
            f"--data-root DIR, the folder that holds {spec.file}."
        )
    root = Path(root).expanduser()
    path = root / spec.file
    if not path.is_file():
        raise EsslError(
            f"{path} does not exist ({family} {split} cells). Generate it with "
            f"{_generate_command(spec, root, target)}, or point data_root at the folder that holds it."
        )
    try:
        with h5py.File(path, "r") as h5:
            have = present_indices(h5, spec.labelled, target)
    except (OSError, ValueError) as exc:
        raise EsslError(
            f"Cannot read {path} as an E-SSL photonics h5 file ({type(exc).__name__}: {exc}). "
            f"Regenerate it with {_generate_command(spec, root, target)}."
        ) from None
    window = sorted(i for i in have if spec.first <= i <= spec.last)
    if not window:
        label = ", " + (", ".join(f"{k}/i" for k in BAND_KEYS) if target == "bands" else f"{DOS_KEY}/i")
        keys = "unitcell/mpbepsimage/i, unitcell/epsavg/i" + (label if spec.labelled else "")
        raise EsslError(
            f"{path} holds no complete {family} {split} samples with indices {spec.first}..{spec.last} "
            f"(each needs the keys {keys}; found {len(have)} complete samples elsewhere). Generate "
            f"them with {_generate_command(spec, root, target)}."
        )
    return path, window


def _read(
    path: Path, indices: list[int] | np.ndarray, labelled: bool, target: str = "dos", nbands: int = 10
) -> PhCData:
    data = load_phc(path, indices, labelled=labelled, target=target, nbands=nbands)
    if tuple(data.x.shape[1:]) != (1, CELL, CELL):
        raise EsslError(f"{path}: unit cells must be {CELL}×{CELL} images, got {tuple(data.x.shape[2:])}.")
    lo, hi = float(data.x.min()), float(data.x.max())
    if lo < -1e-4 or hi > 1 + 1e-4 or not np.isfinite([lo, hi]).all():
        raise EsslError(
            f"{path}: permittivities must lie in [1, 20] so that x = (ε − 1)/19 is in [0, 1]; found "
            f"x in [{lo:.4g}, {hi:.4g}]."
        )
    if labelled and not torch.isfinite(data.y).all():
        raise EsslError(
            f"{path}: some {'band' if target == 'bands' else 'mpbcal/DOS'} labels are not finite; regenerate the file."
        )
    return data


def load_pretrain_cells(name: str, root: str | Path | None, split: str = "train") -> ImageData:
    """``dataset: phc-gpm`` / ``phc-blob``: the unlabelled cells as float32 ``(N, 1, 32, 32)`` images in [0, 1]
    (``x = (ε − 1)/19``), mean 0 and std 1 (no further normalisation), no labels."""
    family = name.removeprefix("phc-")
    _check_family(family)
    if split != "train":
        raise EsslError(
            f"Dataset {name!r} has no class labels and no {split!r} split: it is for pretraining only. "
            f"Evaluate photonics encoders with `essl phc finetune RUN_DIR --data-root DIR`."
        )
    path, indices = present_in_window(family, "unlabelled", root)
    data = _read(path, indices, labelled=False)
    images = data.x.float().clamp_(0.0, 1.0).contiguous()
    return ImageData(images, None, 0, (0.0,), (1.0,), name=name)


@dataclass
class LabelledSplits:
    """Fine-tuning and test samples of one family, and where they came from."""

    train: PhCData
    test: PhCData
    info: dict


def load_labelled_splits(
    family: str, root: str | Path | None, n_train: int, subset_seed: int = 1, target: str = "dos", nbands: int = 10
) -> LabelledSplits:
    """The fine-tuning subset (``n_train`` drawn once from the pool with ``subset_seed``) and the full test set,
    labelled with the ``target`` (``dos``, or ``bands``: the first ``nbands`` band structures)."""
    pool_path, pool = present_in_window(family, "pool", root, target)
    test_path, test_idx = present_in_window(family, "test", root, target)
    if n_train < 1:
        raise EsslError(f"--n-train must be at least 1, got {n_train}.")
    if n_train > len(pool):
        raise EsslError(
            f"{pool_path} holds {len(pool)} labelled {family} cells in the fine-tuning pool "
            f"(indices {SPLITS[(family, 'pool')].first}..{SPLITS[(family, 'pool')].last}), fewer than "
            f"--n-train {n_train}. Lower --n-train or generate more cells."
        )
    chosen = np.random.RandomState(subset_seed).choice(np.asarray(pool), n_train, replace=False)
    train = _read(pool_path, chosen, labelled=True, target=target, nbands=nbands)
    test = _read(test_path, test_idx, labelled=True, target=target, nbands=nbands)
    info = {
        "target": target,
        "train_file": str(pool_path),
        "test_file": str(test_path),
        "pool_size": len(pool),
        "n_train": n_train,
        "n_test": len(test_idx),
        "subset_seed": subset_seed,
        "test_indices": [test_idx[0], test_idx[-1]],
    }
    return LabelledSplits(train, test, info)
