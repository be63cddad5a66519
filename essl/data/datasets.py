"""One entry point for every dataset: ``load_dataset(name, split, root)``."""

from __future__ import annotations

from pathlib import Path

from essl.data.cifar import load_cifar
from essl.data.image_folder import load_image_folder, scan_image_folder
from essl.data.imagenet import split_folder
from essl.data.mnist5k import load_mnist5k
from essl.data.npy import load_npy
from essl.data.types import ImageData
from essl.errors import EsslError, MissingSplit
from essl.extras import require_extra

DATASETS = ("mnist5k", "cifar10", "cifar100", "folder", "npy", "imagenet", "phc-gpm", "phc-blob", "memory")
CHANNEL_DATASETS = ("folder", "imagenet")  # decoded from image files: `channels` picks greyscale (1) or RGB (3)
IN_MEMORY_LIMIT_BYTES = 16 * 2**30  # decoding more than this into memory is refused (imagenet)


def load_dataset(
    name: str, split: str = "train", root: str | None = None, image_size: int = 32, channels: int = 0
) -> ImageData:
    """Load ``name`` (one of :data:`DATASETS`). ``root`` is required for everything but ``mnist5k``.

    For ``folder``, ``root`` is a folder holding ``train/`` and ``test/`` image folders (or a single
    image folder, used for ``train`` only); every image is decoded to ``channels`` (1: greyscale, 3 or 0: RGB),
    its shorter side resized to ``image_size`` and the centre square kept. For ``npy``, ``root`` holds
    ``train/images.npy`` and ``test/images.npy`` with optional ``labels.npy`` (:mod:`essl.data.npy`).

    ``imagenet`` (``root/train``, ``root/val``) is streamed from disk for pretraining
    (:class:`essl.data.imagenet.ImageFolderBatches`); here it is decoded into memory, which evaluation of a small
    ImageNet-layout folder needs, and refused when it would not fit (more than 16 GiB).
    """
    if name == "mnist5k":
        return load_mnist5k(split)
    if name == "memory":  # a run of essl.pretrain(cfg, train=...): its data was never on disk
        raise EsslError(
            "dataset=memory is data handed to essl.pretrain(cfg, RUN, train=images, labels=...) in Python: pass it "
            "there (also to resume such a run; evaluate it with essl.evaluation.memory_target), or save it as "
            "images.npy (+ labels.npy) and use dataset=npy data_root=DIR."
        )
    if name not in DATASETS:
        raise EsslError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    if name.startswith("phc-"):  # photonic unit cells, float32 (essl/data/photonics.py)
        require_extra("phc")  # named before anything is imported, whatever an earlier import left in sys.modules
        from essl.data.photonics import load_pretrain_cells

        return load_pretrain_cells(name, root, split)
    if not root:
        raise EsslError(
            f"Dataset {name!r} is read from disk: set its location with data_root=PATH "
            f"(e.g. `essl pretrain cifar10-esimclr data_root=~/data`)."
        )
    if channels not in (0, 1, 3):
        raise EsslError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels}.")
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, split)
    if name == "npy":
        return load_npy(root, split)
    channels = channels or 3
    if name == "imagenet":
        folder = split_folder(root, split)
        need = len(scan_image_folder(folder)[0]) * channels * image_size**2
        if need > IN_MEMORY_LIMIT_BYTES:
            raise EsslError(
                f"Decoding {folder} at {image_size} px would take {need / 2**30:.0f} GiB of memory. "
                f"Only pretraining streams ImageNet from disk; evaluate on a smaller folder "
                f"(dataset=folder) or a subset."
            )
        return load_image_folder(
            folder, image_size, channels, train_root=None if split == "train" else split_folder(root, "train")
        )
    base = Path(root).expanduser()
    if (base / split).is_dir():
        return load_image_folder(
            base / split, image_size, channels, train_root=base / "train" if split != "train" else None
        )
    if split == "train" and base.is_dir() and not (base / "test").is_dir():
        return load_image_folder(base, image_size, channels)
    raise MissingSplit(
        f"Image folder {base} has no '{split}' subfolder. Lay it out as {base}/train/<class>/... "
        f"and {base}/test/<class>/...."
    )
