"""CIFAR-10 / CIFAR-100 from the standard python-version folders, without executing pickle code.

The batches are Python pickles. :class:`_NumpyOnlyUnpickler` refuses every global except the few
numpy constructors an array needs, so a tampered file cannot run code while it is read.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from essl.data.types import ImageData
from essl.errors import EsslError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # official E-SSL cifar10/main.py
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class _Layout:
    """The files and constants of one CIFAR archive (the python version)."""

    display: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    classes: int
    per_file: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def files(self, split: str) -> tuple[str, ...]:
        return self.train if split == "train" else self.test


_LAYOUT = {
    "cifar10": _Layout(
        display="CIFAR-10",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        label_key="labels",
        classes=10,
        per_file=10000,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
    "cifar100": _Layout(
        display="CIFAR-100",
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
        label_key="fine_labels",
        classes=100,
        per_file=None,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    ),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes under protocol < 3
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch")


def _read_batch(path: Path) -> dict:
    with open(path, "rb") as fh:
        batch = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(batch).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _how_to_get(name: str, folder: str) -> str:
    return (
        f"Download the python version of {_LAYOUT[name].display} (https://www.cs.toronto.edu/~kriz/cifar.html), "
        f"extract it, and pass the folder that contains '{folder}' (or '{folder}' itself) as the dataset root."
    )


def find_cifar_folder(name: str, root: Path | str) -> Path:
    """Return the ``cifar-10-batches-py`` / ``cifar-100-python`` folder under ``root`` (or ``root`` itself)."""
    layout = _LAYOUT[name]
    root = Path(root).expanduser()
    for candidate in (root / layout.folder, root):
        if candidate.is_dir() and all((candidate / f).is_file() for f in layout.test):
            return candidate
    raise EsslError(
        f"No {_LAYOUT[name].display} data found at {root}: expected a folder '{layout.folder}' with files "
        f"{', '.join(layout.train + layout.test)}. {_how_to_get(name, layout.folder)}"
    )


def load_cifar(name: str, root: Path | str, split: str = "train") -> ImageData:
    """Load CIFAR-10 (``name='cifar10'``) or CIFAR-100 (``'cifar100'``, fine labels) as uint8 3×32×32."""
    if name not in _LAYOUT:
        raise EsslError(f"Unknown CIFAR dataset {name!r}; use 'cifar10' or 'cifar100'.")
    if split not in ("train", "test"):
        raise EsslError(f"{name} split must be 'train' or 'test', got {split!r}.")
    layout = _LAYOUT[name]
    folder = find_cifar_folder(name, root)
    missing = [f for f in layout.files(split) if not (folder / f).is_file()]
    if missing:
        raise EsslError(
            f"{_LAYOUT[name].display} is incomplete: {', '.join(missing)} missing in {folder}. "
            f"{_how_to_get(name, layout.folder)}"
        )
    images, labels = [], []
    for fname in layout.files(split):
        path = folder / fname
        try:
            batch = _read_batch(path)
            data = np.asarray(batch["data"], dtype=np.uint8)
            lab = np.asarray(batch[layout.label_key], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError, OSError) as exc:
            raise EsslError(
                f"{path} is not a valid {_LAYOUT[name].display} batch ({type(exc).__name__}: {exc}). "
                f"Re-extract the archive. {_how_to_get(name, layout.folder)}"
            ) from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise EsslError(
                f"{path} has data of shape {data.shape} and {len(lab)} labels; expected (N, 3072) and N "
                f"labels. Re-extract the archive."
            )
        if layout.per_file is not None and len(data) != layout.per_file:
            raise EsslError(
                f"{path} holds {len(data)} images, expected {layout.per_file}: the file is truncated. "
                f"Re-extract the archive."
            )
        if lab.min() < 0 or lab.max() >= layout.classes:
            raise EsslError(f"{path} has labels outside 0..{layout.classes - 1}. Re-extract the archive.")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return ImageData(
        torch.from_numpy(np.concatenate(images)).contiguous(),
        torch.from_numpy(np.concatenate(labels)),
        layout.classes,
        layout.mean,
        layout.std,
        f"{name}-{split}",
    )
