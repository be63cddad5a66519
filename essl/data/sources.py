"""The pretraining data of a dataset, from one factory: its batch source and what the kNN monitor reads.

:func:`training_data` is the only place that knows which datasets are streamed from disk
(:class:`~essl.data.imagenet.ImageFolderBatches`, decoded in DataLoader workers) and which are held in memory
(:class:`~essl.data.batches.TensorBatches`); the training loop only sees a :class:`TrainingData`
(and :meth:`essl.training.monitor.KnnMonitor.for_training` builds the monitor from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from essl.data.batches import BatchSource, TensorBatches
from essl.data.datasets import load_dataset
from essl.data.imagenet import STREAMED_DATASETS, ImageFolderBatches, split_folder
from essl.data.types import ImageData
from essl.errors import EsslError, MissingSplit


@dataclass
class TrainingData:
    """What one pretraining process reads.

    ``labels``/``num_classes``: the training items' labels in the source's order (None: unlabelled), for the
    online probe. The kNN monitor's splits: in memory, ``bank`` (the whole labelled train split) and ``test``;
    streamed, ``files`` (the training source's file list) and ``val`` (the labelled val folder). A split the
    monitor cannot use is None."""

    batches: BatchSource
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    labels: torch.Tensor | None
    num_classes: int
    train: ImageData | None = None
    bank: ImageData | None = None
    test: ImageData | None = None
    files: list[Path] | None = None
    val: Path | None = None


def check_subset(subset: int, n_train: int, dataset: str) -> None:
    """``subset`` (images drawn for training; 0: all) may not exceed the ``n_train`` images of the training set (the
    one setting whose range needs the data; the others are in essl/training/validation.py)."""
    if subset > n_train:
        raise EsslError(
            f"subset={subset} is larger than the training set ({n_train} images of {dataset!r}); use "
            f"subset={n_train} or less (0: all of them)."
        )


def training_data(
    dataset: str,
    root: str | None,
    image_size: int,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    *,
    subset: int = 0,
    shuffle: bool = True,
    workers: int = 0,
    pin_memory: bool = False,
    monitor: bool = False,
    channels: int = 0,
    memory: tuple[ImageData, ImageData | None] | None = None,
) -> TrainingData:
    """This process's batches of ``dataset`` (``subset`` images drawn with ``seed`` when > 0) and, with
    ``monitor``, the labelled splits of the kNN monitor; image folders are decoded to ``channels`` (1 greyscale,
    3 or 0 RGB). ``memory`` is ``(train, test or None)`` already in memory (``dataset=memory``, from
    :func:`essl.training.pretrain.pretrain`). ``fingerprint`` must be equal on every process."""
    if dataset in STREAMED_DATASETS:
        batches = ImageFolderBatches(
            split_folder(root, "train"),
            batch_size,
            seed,
            rank,
            world_size,
            image_size=image_size,
            workers=workers,
            pin_memory=pin_memory,
            subset=subset,
            shuffle=shuffle,
            channels=channels or 3,
        )
        check_subset(subset, batches.total, dataset)
        val = None
        if monitor and batches.labels is not None:
            try:
                val = split_folder(root, "val")
            except MissingSplit:
                val = None  # no labelled val split: the kNN monitor is skipped
        return TrainingData(
            batches,
            batches.channels,
            batches.mean,
            batches.std,
            batches.fingerprint(),
            batches.labels,
            len(batches.classes),
            files=batches.files,
            val=val,
        )
    bank = memory[0] if memory else load_dataset(dataset, "train", root, image_size, channels)
    check_subset(subset, len(bank), dataset)
    train = bank.take(subset, seed) if subset else bank  # the monitor keeps the whole labelled train split
    test = None
    if memory:
        test = memory[1] if monitor and bank.labels is not None else None
    elif monitor and bank.labels is not None:
        try:
            test = load_dataset(dataset, "test", root, image_size, channels)
        except MissingSplit:
            test = None  # no labelled test split: the kNN monitor is skipped
    if test is not None and test.labels is None:
        test = None
    in_memory = TensorBatches(train.images, batch_size, seed, rank, world_size, shuffle=shuffle)
    return TrainingData(
        in_memory,
        train.channels,
        train.mean,
        train.std,
        f"{dataset} {tuple(train.images.shape)}",
        train.labels,
        train.num_classes,
        train=train,
        bank=bank if test is not None else None,
        test=test,
    )
