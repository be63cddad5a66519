"""ImageNet-style image folders streamed from disk: decoded in DataLoader workers, sharded over processes.

Layout (as ImageNet after the usual ``valprep`` step)::

    data_root/train/<class>/<image>      used for pretraining
    data_root/val/<class>/<image>        (or test/) used by evaluation

**Where the random-resized crop happens.** Workers only *decode*: each file is opened with Pillow, its shorter
side is resized to the working size ``S = image_size`` with its aspect ratio kept (JPEGs are first decoded at a
reduced DCT scale when that is still at least ``S``, which is what makes decoding cheap), and the result is put in
the top-left corner of a fixed ``(L, L)`` box, ``L = round(S·4/3)``, together with its valid ``(h, w)``
(:class:`~essl.augmentation.crops.PaddedImages`). A 4:3 image fits whole; a longer side beyond ``L`` (images wider
than 4:3) is cut to ``L``, centred. Every random operation, the RandomResizedCrop of the two SSL views (224 px,
scale 0.08-1) and of the rotation crops (96 px, scale 0.05-0.14) included, runs afterwards on the training device,
per sample: the crop boxes are drawn inside each image's valid region as torchvision's ``RandomResizedCrop`` draws
them on the whole image (:mod:`essl.augmentation.crops`). This keeps the workers deterministic (no random state to
seed or to resume) and keeps one batch tensor per step for all views.

What still differs from torchvision's RandomResizedCrop on the full-resolution file: a crop is resampled from the
image at working size ``S``, not from the original pixels. With ``S = 256`` a full-scale 224-px view is a mild
downscale, while the smallest crops (scale 0.08 of the SSL views, scale 0.05 of the rotation crops) are upscaled
and a little softer than the originals. A larger ``image_size`` brings crops closer to full-resolution ones at more
worker CPU and host-to-device traffic (``3·L²`` bytes per image: 349 kB at ``S = 256``).

**Exact epochs.** :class:`ImageFolderBatches` uses the same permutation and per-rank slicing as
:class:`essl.data.batches.TensorBatches` (:class:`~essl.data.batches.ShardedOrder`): the global batches
of an epoch are identical for any number of processes, and every process reads only its own slice.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from essl.augmentation.crops import PaddedImages
from essl.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, scan_image_folder
from essl.errors import EsslError, MissingSplit
from essl.data.batches import ShardedOrder

STREAMED_DATASETS = ("imagenet",)


def split_folder(root: str | Path | None, split: str) -> Path:
    """``data_root/train`` for ``train``; ``data_root/val`` (or ``data_root/test``) for ``val``/``test``."""
    if not root:
        raise EsslError(
            "dataset imagenet is read from disk: set data_root=PATH, the folder that holds train/ "
            "(and val/), e.g. `essl pretrain imagenet-esimclr data_root=/data/imagenet`."
        )
    base = Path(root).expanduser()
    names = ["train"] if split == "train" else ["val", "test"]
    for name in names:
        if (base / name).is_dir():
            return base / name
    raise MissingSplit(
        f"{base} has no {' or '.join(n + '/' for n in names)} folder. Lay ImageNet out as "
        f"{base}/train/<class>/<image> and {base}/val/<class>/<image>."
    )


MAX_ASPECT = 4 / 3  # the padded box is round(S·4/3) square: ImageNet's typical 4:3 images fit whole


def box_size(size: int) -> int:
    """Side of the padded box for working size ``size``: ``round(size · 4/3)``."""
    return round(size * MAX_ASPECT)


def decode_resized(path: str | Path, size: int, channels: int = 3, max_long: int | None = None) -> np.ndarray:
    """Decode one file with its shorter side resized to ``size`` (bicubic) and its aspect ratio kept → uint8
    ``(C, h, w)`` with ``min(h, w) == size``; a longer side above ``max_long`` is cut to it, centred."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = "RGB" if channels == 3 else "L"
            if im.format == "JPEG":
                im.draft(mode, (size, size))  # DCT-domain downscale; keeps both sides >= size
            im = im.convert(mode)
            w, h = im.size
            scale = size / min(w, h)
            tw, th = max(size, round(w * scale)), max(size, round(h * scale))
            if (w, h) != (tw, th):
                im = im.resize((tw, th), Image.Resampling.BICUBIC)
            cw, ch = min(tw, max_long or tw), min(th, max_long or th)
            if (cw, ch) != (tw, th):
                left, top = (tw - cw) // 2, (th - ch) // 2
                im = im.crop((left, top, left + cw, top + ch))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EsslError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from None
    return arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def decode_square(path: str | Path, size: int, channels: int = 3) -> np.ndarray:
    """Decode one file: shorter side to ``size`` (bicubic), central square crop → uint8 ``(C, size, size)``."""
    return decode_resized(path, size, channels, max_long=size)


def decode_padded(path: str | Path, size: int, channels: int = 3) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one file with its shorter side at ``size`` (aspect kept, longer side at most ``box_size(size)``),
    placed top-left in a zero ``(C, L, L)`` box; returns the box and the valid ``(h, w)``."""
    arr = decode_resized(path, size, channels, max_long=box_size(size))
    side = box_size(size)
    box = np.zeros((arr.shape[0], side, side), dtype=np.uint8)
    box[:, : arr.shape[1], : arr.shape[2]] = arr
    return box, (arr.shape[1], arr.shape[2])


def stratified_subset(labels: torch.Tensor | None, n_total: int, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded subset of ``n`` of ``n_total`` items, stratified by class when there are labels
    (the same draw as :meth:`essl.data.types.ImageData.take`, so ``subset`` picks the same files here as for an
    in-memory ``folder`` dataset)."""
    if n <= 0 or n >= n_total:
        return torch.arange(n_total)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_total, generator=g)
    if labels is None:
        return order[:n].sort().values
    shuffled = labels[order]
    rank_in_class = torch.zeros(n_total, dtype=torch.long)
    for c in shuffled.unique():
        idx = (shuffled == c).nonzero().flatten()
        rank_in_class[idx] = torch.arange(len(idx))
    num_classes = int(labels.max()) + 1
    chosen = order[torch.argsort(rank_in_class * num_classes + shuffled, stable=True)[:n]]
    return chosen.sort().values


class DecodedFiles(Dataset):
    """``dataset[i]`` is file ``i`` decoded by :func:`decode_padded`: ``(uint8 box, valid (h, w))``."""

    def __init__(self, files: list[Path], size: int, channels: int = 3):
        # One numpy buffer of UTF-8 paths rather than a list of 1.28 M Python strings: forked workers share it
        # copy-on-write, where touching the refcounts of a list would copy it into every worker.
        self.paths = np.array([str(f).encode() for f in files], dtype=np.bytes_)
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        box, valid = decode_padded(self.paths[index].decode(), self.size, self.channels)
        return torch.from_numpy(box), torch.tensor(valid)


def _ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM: SLURM sends it to every process of a job step, and the training process
    must finish its step and write a checkpoint (essl/training/preemption.py) before the workers go; they end
    with the loader."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class ImageFolderBatches(ShardedOrder):
    """This rank's :class:`~essl.augmentation.crops.PaddedImages` batches (``global_batch / world_size`` images in
    ``(C, L, L)`` boxes, ``L = box_size(S)``, with their valid sizes) of an image folder, decoded by
    ``workers`` DataLoader worker processes (0: in this process), in the exact order of
    :class:`~essl.data.batches.TensorBatches`."""

    def __init__(
        self,
        root: str | Path,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        image_size: int = 256,
        workers: int = 4,
        channels: int = 3,
        pin_memory: bool = False,
        subset: int = 0,
        prefetch: int = 2,
        shuffle: bool = True,
    ):
        files, labels, classes = scan_image_folder(root)
        label_tensor = None if labels is None else torch.tensor(labels)
        keep = stratified_subset(label_tensor, len(files), subset, seed).tolist()
        self.total = len(files)  # before the subset
        self.files = [files[i] for i in keep]
        self.labels = None if labels is None else torch.tensor([labels[i] for i in keep])
        self.classes = classes
        super().__init__(len(self.files), global_batch, seed, rank, world_size, shuffle)
        self.root, self.image_size, self.channels = Path(root).expanduser(), image_size, channels
        self.workers, self.pin_memory, self.prefetch = workers, pin_memory, prefetch
        norm: tuple[tuple[float, ...], tuple[float, ...]] = (
            (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
        )
        self.mean, self.std = norm
        self.dataset = DecodedFiles(self.files, image_size, channels)

    def fingerprint(self) -> str:
        """Text that must be equal on every rank (checked by the trainer): the file list."""
        return f"{len(self.files)}\n" + "\n".join(str(f.relative_to(self.root)) for f in self.files)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[PaddedImages]:
        indices = self.rank_indices(epoch, start_step).tolist()
        if not indices:
            return
        workers = self.workers > 0
        # A new loader (and new workers) per epoch: simple, and negligible next to an ImageNet epoch.
        loader = DataLoader(
            self.dataset,
            batch_size=self.local_batch,
            sampler=indices,
            shuffle=False,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            drop_last=False,
            prefetch_factor=self.prefetch if workers else None,
            persistent_workers=False,
            worker_init_fn=_ignore_sigterm if workers else None,
        )
        for images, sizes in loader:
            yield PaddedImages(images, sizes)


def center_crop_size(size: int) -> int:
    """The evaluation crop for working size ``size``: ``round(size·224/256)`` (the ImageNet ``Resize(256)`` +
    ``CenterCrop(224)`` ratio of rdangovs/essl ``imagenet/*/linear_probe.py``)."""
    return round(size * 224 / 256)


class CenterCropFiles(Dataset):
    """``dataset[i]``: file ``i`` resized (shorter side ``resize``), then its central ``crop × crop``: torchvision's
    ``Resize(resize)`` + ``CenterCrop(crop)``, the un-augmented evaluation input, as a uint8 tensor."""

    def __init__(self, files: list[Path], resize: int, crop: int, channels: int = 3):
        if crop > resize:
            raise EsslError(f"The evaluation crop ({crop} px) cannot exceed the resize ({resize} px).")
        self.paths = np.array([str(f).encode() for f in files], dtype=np.bytes_)
        self.resize, self.crop, self.channels = resize, crop, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        arr = decode_square(self.paths[index].decode(), self.resize, self.channels)
        top = (self.resize - self.crop) // 2
        return torch.from_numpy(arr[:, top : top + self.crop, top : top + self.crop].copy())


def per_class_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded draw of ``per_class`` items of every class (all of a smaller class)."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picked).sort().values
