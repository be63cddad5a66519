"""Generic image folders read with Pillow: ``root/<class>/<image>`` (labelled) or ``root/<image>`` (unlabelled).

:func:`scan_image_folder` lists the files once; :func:`load_image_folder` decodes them all into memory at a
fixed size (fine for small custom data). Large folders (ImageNet) are decoded lazily in DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from essl.data.types import ImageData
from essl.errors import EsslError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scan_image_folder(
    root: Path | str, train_root: Path | str | None = None
) -> tuple[list[Path], list[int] | None, list[str]]:
    """Return (files, labels or None, class names). Subfolders are classes; files directly in root are unlabelled.
    With ``train_root`` (for a test or val split), labels and class names are the train split's, matched by class
    folder name (:func:`match_classes`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EsslError(
            f"Image folder {root} does not exist. Pass a folder with one subfolder of images per class, "
            f"or a folder of images (unlabelled)."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        files, labels = [], []
        for label, cls in enumerate(classes):
            found = sorted(p for p in (root / cls).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        out_labels: list[int] | None = labels
    else:
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        out_labels = None
    if train_root is not None and out_labels is not None:
        train_classes = class_names(train_root)
        out_labels, classes = match_classes(classes, out_labels, train_classes, root, train_root), train_classes
    if not files:
        raise EsslError(
            f"No images found in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in class "
            f"subfolders or directly in the folder). Put the images in {root}/<class>/, or point "
            f"data_root at the folder that holds them."
        )
    return files, out_labels, classes


def decode_image(path: Path, size: int, channels: int = 3) -> np.ndarray:
    """Decode one image with Pillow, resize the shorter side to ``size`` and centre-crop: uint8 (C, size, size)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise EsslError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def class_names(root: Path | str) -> list[str]:
    """The class subfolders of an image folder, sorted (their positions are the labels)."""
    root = Path(root).expanduser()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def match_classes(
    classes: list[str], labels: list[int] | None, train_classes: list[str], root: Path | str, train_root: Path | str
) -> list[int] | None:
    """Labels of a test folder renumbered to the train folder's classes, matched by class name (not position); a
    test class without a train folder is an error that names it."""
    if labels is None or classes == train_classes:
        return labels
    missing = [c for c in classes if c not in train_classes]
    if missing:
        raise EsslError(
            f"Class folder(s) {', '.join(repr(c) for c in missing)} of {root} have no counterpart in "
            f"{train_root} (its classes: {', '.join(train_classes[:10])}"
            f"{', ...' if len(train_classes) > 10 else ''}). Test classes are matched to train classes "
            f"by folder name: rename or remove the folder(s)."
        )
    index = {c: i for i, c in enumerate(train_classes)}
    return [index[classes[label]] for label in labels]


def load_image_folder(
    root: Path | str, image_size: int = 32, channels: int = 3, train_root: Path | str | None = None
) -> ImageData:
    """Decode a whole image folder into memory at ``image_size`` (shorter side resize + centre crop). With
    ``train_root`` (the train split of a test folder), labels are the train folder's class indices, matched by
    class name."""
    files, labels, classes = scan_image_folder(root, train_root)
    images = np.stack([decode_image(f, image_size, channels) for f in files])
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
    return ImageData(
        torch.from_numpy(images),
        None if labels is None else torch.tensor(labels),
        max(len(classes), 1),
        mean,
        std,
        f"folder:{Path(root).name}",
    )
