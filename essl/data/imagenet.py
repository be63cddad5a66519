"""ImageNet-style image folders streamed from disk: decoded in DataLoader workers, sharded over processes.

Layout (as ImageNet after the usual ``valprep`` step)::

    data_root/train/<class>/<image>      used for pretraining
    data_root/val/<class>/<image>        (or test/) used by evaluation

**Where the random-resized crop happens.** Workers only *decode*: each file is opened with Pillow, its shorter
side is resized to the working size ``image_size`` (JPEGs are first decoded at a reduced DCT scale when that is
still at least ``image_size``, which is what makes decoding cheap) and the central ``image_size`` square is kept.
The workers send these uint8 ``(3, S, S)`` squares; every random operation, the RandomResizedCrop of the two SSL
views (224 px, scale 0.08-1) and of the rotation crops (96 px, scale 0.05-0.14) included, runs afterwards on the
training device with the kornia recipes of :mod:`essl.augmentation.views`, per sample, from the same square.
This keeps the workers deterministic (no random state to seed or to resume), keeps one batch tensor per step
for all views, and makes the ImageNet path the same code path as MNIST/CIFAR.

What it changes compared with torchvision's RandomResizedCrop on the full-resolution file:

- crops are drawn from the central square (ImageNet images are ~4:3, so ~1/8 of the width on each side is
  never seen), with the recipe's aspect-ratio range inside that square;
- a crop is resampled from the ``S``-pixel square, not from the original pixels: with ``S = 256`` a full-scale
  224-px view is a mild downscale, while the smallest crops (scale 0.08 of the SSL views: ~72 px of the square;
  scale 0.05 of the rotation crops: ~57 px) are upscaled and a little softer than the originals. A larger
  ``image_size`` (e.g. 320) brings crops closer to full-resolution ones at more worker CPU and host-to-device
  traffic (``3·S²`` bytes per image).

**Exact epochs.** :class:`ImageFolderBatches` uses the same permutation and per-rank slicing as
:class:`essl.training.batches.TensorBatches` (:class:`~essl.training.batches.ShardedOrder`): the global batches
of an epoch are identical for any number of processes, and every process reads only its own slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from essl.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, scan_image_folder
from essl.errors import EsslError
from essl.training.batches import ShardedOrder

STREAMED_DATASETS = ("imagenet",)


def split_folder(root: str | Path | None, split: str) -> Path:
    """``data_root/train`` for ``train``; ``data_root/val`` (or ``data_root/test``) for ``val``/``test``."""
    if not root:
        raise EsslError("dataset imagenet is read from disk: set data_root=PATH, the folder that holds train/ "
                        "(and val/), e.g. `essl pretrain imagenet-esimclr data_root=/data/imagenet`.")
    base = Path(root).expanduser()
    names = ["train"] if split == "train" else ["val", "test"]
    for name in names:
        if (base / name).is_dir():
            return base / name
    raise EsslError(f"{base} has no {' or '.join(n + '/' for n in names)} folder. Lay ImageNet out as "
                    f"{base}/train/<class>/<image> and {base}/val/<class>/<image>.")


def decode_square(path: str | Path, size: int, channels: int = 3) -> np.ndarray:
    """Decode one file: shorter side to ``size`` (bicubic), central square crop → uint8 ``(C, size, size)``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = "RGB" if channels == 3 else "L"
            if im.format == "JPEG":
                im.draft(mode, (size, size))  # DCT-domain downscale; keeps both sides >= size
            im = im.convert(mode)
            w, h = im.size
            scale = size / min(w, h)
            if (w, h) != (size, size):
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EsslError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from None
    return arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


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
    """``dataset[i]`` is file ``i`` decoded by :func:`decode_square` as a uint8 tensor."""

    def __init__(self, files: list[Path], size: int, channels: int = 3):
        # One numpy buffer of UTF-8 paths rather than a list of 1.28 M Python strings: forked workers share it
        # copy-on-write, where touching the refcounts of a list would copy it into every worker.
        self.paths = np.array([str(f).encode() for f in files], dtype=np.bytes_)
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index].decode()
        return torch.from_numpy(decode_square(path, self.size, self.channels))


class ImageFolderBatches(ShardedOrder):
    """This rank's uint8 batches ``(global_batch / world_size, C, S, S)`` of an image folder, decoded by
    ``workers`` DataLoader worker processes (0: in this process), in the exact order of
    :class:`~essl.training.batches.TensorBatches`."""

    def __init__(self, root: str | Path, global_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 image_size: int = 256, workers: int = 4, channels: int = 3, pin_memory: bool = False,
                 subset: int = 0, prefetch: int = 2):
        files, labels, classes = scan_image_folder(root)
        label_tensor = None if labels is None else torch.tensor(labels)
        keep = stratified_subset(label_tensor, len(files), subset, seed).tolist()
        self.files = [files[i] for i in keep]
        self.labels = None if labels is None else torch.tensor([labels[i] for i in keep])
        self.classes = classes
        super().__init__(len(self.files), global_batch, seed, rank, world_size)
        self.root, self.image_size, self.channels = Path(root).expanduser(), image_size, channels
        self.workers, self.pin_memory, self.prefetch = workers, pin_memory, prefetch
        self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
        self.dataset = DecodedFiles(self.files, image_size, channels)

    def fingerprint(self) -> str:
        """Text that must be equal on every rank (checked by the trainer): the file list."""
        return f"{len(self.files)}\n" + "\n".join(str(f.relative_to(self.root)) for f in self.files)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        indices = self.rank_indices(epoch, start_step).tolist()
        if not indices:
            return
        kw = dict(num_workers=self.workers, pin_memory=self.pin_memory, drop_last=False)
        if self.workers > 0:
            kw.update(prefetch_factor=self.prefetch, persistent_workers=False)
        # A new loader (and new workers) per epoch: simple, and negligible next to an ImageNet epoch.
        loader = DataLoader(self.dataset, batch_size=self.local_batch, sampler=indices, shuffle=False, **kw)
        yield from loader
