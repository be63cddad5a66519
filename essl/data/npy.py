"""Your own arrays: ``dataset=npy data_root=DIR`` reads ``DIR/train/images.npy`` and ``DIR/test/images.npy``.

``images.npy`` is ``uint8`` ``(N, H, W)`` (one channel) or ``(N, C, H, W)`` with C = 1 or 3 (``(N, H, W, C)``
is also taken when its last axis is 1 or 3 and its second is not). Float arrays with values in [0, 1] are
kept as float32. ``labels.npy`` beside it (optional) holds ``N`` integer class indices 0..K-1. A folder with
``images.npy`` directly in it (no ``train/``) is the training split.

The normalisation constants are the per-channel mean and standard deviation of the *training* images, for
both splits. Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from essl.data.types import ImageData
from essl.errors import EsslError


def npy_split_dir(root: Path | str, split: str) -> Path:
    """``root/split`` when it holds ``images.npy``; ``root`` itself for ``train`` when it holds one."""
    base = Path(root).expanduser()
    if (base / split / "images.npy").is_file():
        return base / split
    if split == "train" and (base / "images.npy").is_file():
        return base
    raise EsslError(
        f"No {split} images for dataset=npy under {base}: expected {base / split / 'images.npy'} "
        f"(uint8, N×H×W or N×C×H×W) and optionally {base / split / 'labels.npy'}."
    )


def _read(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise EsslError(f"Cannot read {path} as a .npy array ({exc}). Save it with numpy.save.") from None
    if not isinstance(array, np.ndarray):
        raise EsslError(f"{path} is an .npz archive; save a single array with numpy.save.")
    return array


def _as_nchw(images: np.ndarray, path: str | Path) -> np.ndarray:
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        if images.shape[1] in (1, 3):
            return images
        if images.shape[3] in (1, 3):
            return images.transpose(0, 3, 1, 2)
    raise EsslError(f"{path} has shape {images.shape}; expected N×H×W (greyscale) or N×C×H×W with C = 1 or 3.")


def image_tensor(images: Any, what: str | Path) -> torch.Tensor:
    """An array or tensor of images (see the module docstring) as a uint8 or float32 ``(N, C, H, W)`` tensor
    (a copy); ``what`` names it in errors."""
    images = _as_nchw(images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images), what)
    if len(images) == 0:
        raise EsslError(f"{what} holds no images.")
    if images.dtype == np.uint8:
        return torch.from_numpy(np.array(images, order="C"))  # writable, also when read memory-mapped
    if images.dtype.kind == "f":
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1 or not np.isfinite([lo, hi]).all():
            raise EsslError(f"{what} holds floats in [{lo:g}, {hi:g}]; give uint8 images (0-255) or floats in [0, 1].")
        return torch.from_numpy(np.array(images, dtype=np.float32, order="C"))
    raise EsslError(f"{what} holds {images.dtype} values; give uint8 images (0-255) or floats in [0, 1].")


def label_tensor(labels: Any, count: int, what: str | Path) -> torch.Tensor:
    """Integer class indices ``(count,)`` as int64."""
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim != 1 or len(labels) != count:
        raise EsslError(f"{what} has shape {labels.shape}; expected ({count},), one label per image.")
    if labels.dtype.kind not in "iu":
        raise EsslError(f"{what} holds {labels.dtype} values; labels must be integer class indices 0..K-1.")
    if count and labels.min() < 0:
        raise EsslError(f"{what} holds negative labels; use class indices 0..K-1.")
    return torch.from_numpy(labels.astype(np.int64))


def _images(path: Path) -> torch.Tensor:
    return image_tensor(_read(path), path)


def _labels(path: Path, count: int) -> torch.Tensor | None:
    return label_tensor(_read(path), count, path) if path.is_file() else None


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in [0, 1] units, accumulated in chunks (float64)."""
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        x = chunk.double().div_(scale)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def as_image_data(
    images: Any,
    labels: Any = None,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    num_classes: int | None = None,
    name: str = "memory",
) -> ImageData:
    """Data already in memory as an :class:`ImageData`: ``images`` a numpy array or tensor laid out as for
    ``images.npy`` (an :class:`ImageData` is returned unchanged), ``labels`` optional class indices. ``mean``/``std``
    default to the images' own per-channel statistics; for a test split pass the training split's."""
    if isinstance(images, ImageData):
        return images
    tensor = image_tensor(images, f"{name} images")
    label = None if labels is None else label_tensor(labels, len(tensor), f"{name} labels")
    if mean is None or std is None:
        mean, std = channel_stats(tensor)
    if num_classes is None:
        num_classes = int(label.max()) + 1 if label is not None and len(label) else 1
    return ImageData(tensor, label, num_classes, tuple(mean), tuple(std), name)


def load_npy(root: Path | str, split: str = "train") -> ImageData:
    """The ``split`` of an array dataset (see the module docstring)."""
    folder = npy_split_dir(root, split)
    images = _images(folder / "images.npy")
    labels = _labels(folder / "labels.npy", len(images))
    train_dir = npy_split_dir(root, "train")
    train = images if split == "train" else _images(train_dir / "images.npy")
    if train.shape[1] != images.shape[1]:
        raise EsslError(
            f"{folder / 'images.npy'} has {images.shape[1]} channel(s) but the training images have {train.shape[1]}."
        )
    mean, std = channel_stats(train)
    train_labels = labels if split == "train" else _labels(train_dir / "labels.npy", len(train))
    if labels is not None and train_labels is not None and split != "train":
        unseen = sorted(set(labels.unique().tolist()) - set(train_labels.unique().tolist()))
        if unseen:  # a class the classifier never sees in training: its test images could only be wrong
            raise EsslError(
                f"{folder / 'labels.npy'} has test label(s) {', '.join(map(str, unseen[:10]))} that never occur in "
                f"{train_dir / 'labels.npy'}. Every test class must have training images: use the same class "
                f"indices in both splits, or remove those test images."
            )
    num_classes = (
        max(int(t.max()) + 1 for t in (labels, train_labels) if t is not None and len(t)) if labels is not None else 1
    )
    return ImageData(images, labels, num_classes, mean, std, f"npy:{Path(root).expanduser().name}-{split}")
