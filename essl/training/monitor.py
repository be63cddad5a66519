"""What the pretraining loop measures at the kNN interval: the weighted kNN top-1 (k = 200, t = 0.1, the official
CIFAR-10 monitor, rdangovs/essl ``cifar10/main.py``) and, with the online probe, its top-1 on the same test/val
features.

Two kinds of data:

- **in memory** (MNIST-5k, CIFAR, small folders): the labelled train split is the bank, the test split the
  queries, both un-augmented; computed on the main process;
- **streamed** (ImageNet-layout folders): a fixed, seeded, class-stratified subset of ``knn_subset`` images per
  class of ``train/`` (the bank) and of ``val/`` (the queries), each decoded as ``Resize(S)`` + ``CenterCrop
  (S·224/256)`` in DataLoader workers; every process extracts its share and the features are gathered.

``knn_subset`` (images per class, 0: all) applies to both kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from essl.data import ImageData
from essl.data.image_folder import scan_image_folder
from essl.data.imagenet import CenterCropFiles, center_crop_size, per_class_subset
from essl.data.sources import TrainingData
from essl.training.knn import knn_accuracy
from essl.training.features import extract_dataset_features, extract_features


class KnnMonitor:
    """A labelled bank and labelled queries; :meth:`measure` returns ``knn_top1`` (and
    ``online_probe_val_top1`` when given a probe)."""

    def __init__(
        self,
        bank: ImageData | CenterCropFiles,
        bank_labels: torch.Tensor,
        queries: ImageData | CenterCropFiles,
        query_labels: torch.Tensor,
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        k: int,
        t: float,
        workers: int = 0,
    ):
        self.bank, self.bank_labels, self.queries, self.query_labels = bank, bank_labels, queries, query_labels
        self.num_classes, self.mean, self.std, self.k, self.t = num_classes, mean, std, k, t
        self.workers = workers
        self.streamed = isinstance(bank, CenterCropFiles)

    @classmethod
    def in_memory(cls, bank: ImageData, test: ImageData, per_class: int, seed: int, k: int, t: float) -> KnnMonitor:
        if per_class:
            bank = bank.subset(per_class_subset(bank.require_labels(), per_class, seed))
            test = test.subset(per_class_subset(test.require_labels(), per_class, seed + 1))
        return cls(
            bank, bank.require_labels(), test, test.require_labels(), bank.num_classes, bank.mean, bank.std, k, t
        )

    @classmethod
    def streamed_folders(
        cls,
        train_files: list[Path],
        train_labels: torch.Tensor,
        num_classes: int,
        val_root: Path,
        image_size: int,
        per_class: int,
        seed: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        k: int,
        t: float,
        workers: int,
        channels: int = 3,
        train_root: Path | None = None,
    ) -> KnnMonitor:
        """Bank: ``per_class`` of ``train_files`` (the training source's list, not scanned again); queries:
        ``per_class`` of the labelled images under ``val_root``, their classes matched to ``train_root``'s by name."""
        crop = center_crop_size(image_size)
        val_files, val_labels, _ = scan_image_folder(val_root, train_root)
        parts = []
        for files, y, s in ((train_files, train_labels, seed), (val_files, torch.tensor(val_labels), seed + 1)):
            keep = per_class_subset(y, per_class, s) if per_class else torch.arange(len(files))
            parts.append((CenterCropFiles([files[i] for i in keep.tolist()], image_size, crop, channels), y[keep]))
        (bank, bank_y), (queries, query_y) = parts
        return cls(bank, bank_y, queries, query_y, num_classes, mean, std, k, t, workers)

    @classmethod
    def for_training(
        cls, data: TrainingData, image_size: int, per_class: int, seed: int, k: int, t: float, workers: int
    ) -> KnnMonitor | None:
        """The monitor of a run's :class:`~essl.data.sources.TrainingData` (None when it has no labelled
        queries): streamed folders or data in memory."""
        if data.files is not None and data.val is not None and data.labels is not None:
            return cls.streamed_folders(
                data.files,
                data.labels,
                data.num_classes,
                data.val,
                image_size,
                per_class,
                seed,
                data.mean,
                data.std,
                k,
                t,
                workers,
                data.channels,
                train_root=getattr(data.batches, "root", None),
            )
        if data.bank is not None and data.test is not None:
            return cls.in_memory(data.bank, data.test, per_class, seed, k, t)
        return None

    def features(
        self,
        backbone: nn.Module,
        data: ImageData | CenterCropFiles,
        device: torch.device,
        dtype: torch.dtype,
        channels_last: bool,
    ) -> torch.Tensor:
        if isinstance(data, CenterCropFiles):  # streamed (self.streamed): decoded in workers
            return extract_dataset_features(
                backbone,
                data,
                self.mean,
                self.std,
                workers=self.workers,
                device=device,
                dtype=dtype,
                channels_last=channels_last,
            )
        return extract_features(
            backbone, data.images, self.mean, self.std, device=device, dtype=dtype, channels_last=channels_last
        )

    def measure(
        self,
        backbone: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        channels_last: bool,
        is_main: bool,
        probe: Any = None,
    ) -> dict[str, float]:
        """Run on every process for streamed data (each extracts its share); in memory only the main one works."""
        if not (self.streamed or is_main):
            return {}
        bank_f = self.features(backbone, self.bank, device, dtype, channels_last)
        query_f = self.features(backbone, self.queries, device, dtype, channels_last)
        out = {
            "knn_top1": knn_accuracy(
                bank_f, self.bank_labels, query_f, self.query_labels, self.num_classes, self.k, self.t
            )
        }
        if probe is not None:
            out["online_probe_val_top1"] = probe.accuracy(query_f, self.query_labels)
        return out
