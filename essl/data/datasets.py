"""One entry point for every dataset: ``load_dataset(name, split, root)``."""

from __future__ import annotations

from pathlib import Path

from essl.data.cifar import load_cifar
from essl.data.image_folder import load_image_folder
from essl.data.mnist5k import load_mnist5k
from essl.data.types import ImageData
from essl.errors import EsslError

DATASETS = ("mnist5k", "cifar10", "cifar100", "folder")


def load_dataset(name: str, split: str = "train", root: str | None = None, image_size: int = 32) -> ImageData:
    """Load ``name`` (one of :data:`DATASETS`). ``root`` is required for everything but ``mnist5k``.

    For ``folder``, ``root`` is a folder holding ``train/`` and ``test/`` image folders (or a single
    image folder, used for ``train`` only).
    """
    if name == "mnist5k":
        return load_mnist5k(split)
    if name not in DATASETS:
        raise EsslError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    if not root:
        raise EsslError(f"Dataset {name!r} is read from disk: set its location with data_root=PATH "
                        f"(e.g. `essl pretrain cifar10-esimclr data_root=~/data`).")
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, split)
    base = Path(root).expanduser()
    if (base / split).is_dir():
        return load_image_folder(base / split, image_size)
    if split == "train" and base.is_dir() and not (base / "test").is_dir():
        return load_image_folder(base, image_size)
    raise EsslError(f"Image folder {base} has no '{split}' subfolder. Lay it out as {base}/train/<class>/... and "
                    f"{base}/test/<class>/....")
