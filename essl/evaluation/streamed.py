"""Evaluation on image folders streamed from disk (``dataset=imagenet``, or a folder too large for memory).

Nothing is decoded into memory as a whole: images are decoded in DataLoader workers batch by batch, so peak
memory is bounded by the batch size and the number of workers, whatever the size of the folder.

- **Un-augmented inputs** (kNN, ``linear_lbfgs``): ``Resize(S)`` + ``CenterCrop(S·224/256)`` (the validation
  transform of rdangovs/essl ``imagenet/*/linear_probe.py``). Their features are computed once and cached on disk
  as a float16 memmap under ``OUT/eval/cache/``, keyed by the checkpoint's SHA-256, the split's file list and the
  transform; a second evaluation of the same checkpoint reads the cache instead of extracting again.
- **Trained protocols** (``cifar``, ``imagenet_simclr``, ``imagenet_bt``, ``imagenet_simsiam``, ``bt_finetune``):
  every epoch streams the training split with the protocol's augmentation: RandomResizedCrop drawn inside the
  whole image (:mod:`essl.augmentation.crops`, images padded by the workers as in pretraining) and the
  horizontal flip; the test split is streamed with the validation transform.

**Several processes (torchrun).** Feature extraction is split over the processes (each takes a contiguous block
of the items and writes its own file, which the first process joins) and the kNN queries too. A trained protocol
uses the global batch of one process: every process draws the same epoch order and the same per-image
augmentation numbers for the whole global batch (from a generator seeded by ``(seed, epoch, step)``) and takes its
slice; the loss of each slice is divided by the global batch size and the gradients are summed over processes. A frozen-backbone probe therefore gives the result of one
process up to floating-point summation order. Fine-tuning trains BatchNorm in train mode, whose statistics are
taken per process as in facebookresearch/barlowtwins ``evaluate.py`` (DistributedDataParallel without
SyncBatchNorm), so, like the official recipe, it is not process-count invariant. The feature cache must be on a
file system every process sees (it is the output folder).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from essl.augmentation import Normalize
from essl.augmentation.crops import ATTEMPTS, crop_resize, sample_crop_boxes
from essl.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, scan_image_folder
from essl.data.imagenet import CenterCropFiles, DecodedFiles, center_crop_size
from essl.errors import EsslError
from essl.evaluation.classifier import end_epoch, feature_dim, make_linear, make_optimizer, run_record
from essl.evaluation.diagnostics import orbit_features, scores, seeded_subset
from essl.evaluation.catalog import EvalProtocol
from essl.evaluation.protocols import lr_schedule
from essl.runs import write_atomic
from essl.runtime import autocast_context, to_channels_last
from essl.training.features import extract_dataset_features, shard

DEFAULT_WORKING_SIZE = 256


@dataclass
class StreamedSplit:
    """A labelled image folder read lazily. ``size`` is the working size ``S`` (shorter side of decoded images);
    ``image_size`` the evaluation crop ``round(S·224/256)`` that the backbone sees."""

    files: list[Path]
    labels: torch.Tensor
    num_classes: int
    size: int
    name: str
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    workers: int = 4

    @classmethod
    def scan(
        cls, root: Path, size: int, name: str, workers: int = 4, channels: int = 3, train_root: Path | None = None
    ) -> StreamedSplit:
        """The labelled images under ``root``, decoded to ``channels`` (3: RGB, ImageNet statistics; 1: grey); a
        test split gives ``train_root`` so that its classes match the train split's by name."""
        files, labels, classes = scan_image_folder(root, train_root)
        if labels is None:
            raise EsslError(
                f"{root} has no class subfolders; evaluation needs labelled images (one subfolder per class)."
            )
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
        return cls(files, torch.tensor(labels), len(classes), size, name, channels, mean, std, workers=workers)

    def __len__(self) -> int:
        return len(self.files)

    def require_labels(self) -> torch.Tensor:
        """The labels (a streamed split always has them), as :meth:`essl.data.ImageData.require_labels`."""
        return self.labels

    @property
    def image_size(self) -> int:
        return center_crop_size(self.size)

    def subset(self, index: torch.Tensor) -> StreamedSplit:
        keep = index.tolist()
        return replace(self, files=[self.files[i] for i in keep], labels=self.labels[index])

    def eval_dataset(self, resize: int | None = None, crop: int | None = None) -> CenterCropFiles:
        """The un-augmented inputs: ``Resize(resize)`` + ``CenterCrop(crop)`` (default ``S`` and ``S·224/256``)."""
        return CenterCropFiles(self.files, resize or self.size, crop or self.image_size, self.channels)

    def digest(self) -> str:
        """CRC of the file list (names and order), part of the feature-cache key."""
        return f"{zlib.crc32(chr(10).join(str(f) for f in self.files).encode()) & 0xFFFFFFFF:08x}"


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------- feature cache
def cached_features(
    backbone: nn.Module,
    split: StreamedSplit,
    cache_dir: Path,
    checkpoint_sha: str,
    device: torch.device,
    dtype: torch.dtype | None,
    channels_last: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """``(N, D)`` float16 memmap of the un-augmented features of ``split``: read from ``cache_dir`` when a cache
    with the same checkpoint, file list and transform exists, else extracted (split over processes) and written
    (atomically: a partial file never carries the final name)."""
    rank, world = dist_info()
    names: dict[torch.dtype | None, str] = {torch.bfloat16: "bf16", torch.float16: "fp16"}
    prec = names.get(dtype, "fp32")
    transform = f"resize{split.size}-center{split.image_size}-{prec}"
    key = hashlib.sha256(f"{checkpoint_sha}|{split.digest()}|{transform}".encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"features-{split.name}-{key}.f16"
    meta_path = path.with_suffix(".json")
    cached = _cached_features(path, meta_path, len(split))
    if cached is not None:
        return cached
    dim = _feature_dim(backbone, split, device)
    # every process writes its own block to its own file (safe on a shared file system across nodes); the first
    # process joins them into the cache file, written under a temporary name and renamed when complete
    block = shard(len(split), rank, world)
    part = path.with_name(f".{path.name}.part{rank}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(block):
        out = np.memmap(part, dtype=np.float16, mode="w+", shape=(len(block), dim))
        extract_dataset_features(
            backbone,
            split.eval_dataset(),
            split.mean,
            split.std,
            batch_size,
            split.workers,
            device,
            dtype,
            channels_last,
            out=out,
        )
        out.flush()
        del out
    if world > 1:
        dist.barrier()
    if rank == 0:
        tmp = path.with_name(f".{path.name}.partial")
        with open(tmp, "wb") as joined:
            for r in range(world):
                if len(shard(len(split), r, world)):
                    piece = path.with_name(f".{path.name}.part{r}")
                    with open(piece, "rb") as fh:
                        shutil.copyfileobj(fh, joined, 1 << 24)
                    piece.unlink()
        os.replace(tmp, path)
        write_atomic(
            meta_path,
            json.dumps(
                {
                    "n": len(split),
                    "dim": dim,
                    "checkpoint_sha256": checkpoint_sha,
                    "files_crc32": split.digest(),
                    "transform": transform,
                    "split": split.name,
                }
            ),
        )
    if world > 1:
        dist.barrier()
    return np.memmap(path, dtype=np.float16, mode="r", shape=(len(split), dim))


def _cached_features(path: Path, meta_path: Path, n: int) -> np.ndarray | None:
    """The cached features when the cache file and its metadata are complete and agree (``n`` rows of ``dim``
    float16 values); None otherwise (none yet, or a cache a killed process left damaged: extracted again)."""
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        rows, dim = int(meta["n"]), int(meta["dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if rows != n or dim < 1 or path.stat().st_size != rows * dim * 2:
        return None
    return np.memmap(path, dtype=np.float16, mode="r", shape=(rows, dim))


def _feature_dim(backbone: nn.Module, split: StreamedSplit, device: torch.device) -> int:
    dim = getattr(backbone, "feature_dim", None)
    if isinstance(dim, int):
        return dim
    x = Normalize(split.mean, split.std)(split.eval_dataset()[0][None]).to(device)
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = backbone(x).shape[1]
    backbone.train(was)
    return int(dim)


# ------------------------------------------------------------------------------------------ kNN on memmaps
@torch.no_grad()
def knn_accuracy_chunked(
    bank: np.ndarray,
    bank_labels: torch.Tensor,
    queries: np.ndarray,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    device: torch.device | str = "cpu",
    chunk: int = 1024,
    bank_chunk: int = 16384,
) -> float:
    """Weighted kNN top-1 (%) (:func:`essl.training.knn.knn_predict`'s rule) with the bank read in chunks:
    memory is bounded by ``chunk × bank_chunk``. Queries are split over processes and the hits summed."""
    rank, world = dist_info()
    device = torch.device(device)
    k = min(k, len(bank))
    hits = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(rank * chunk, len(queries), chunk * world):
        q = F.normalize(
            torch.from_numpy(np.asarray(queries[start : start + chunk], dtype=np.float32)).to(device), dim=1
        )
        best_sim = torch.full((len(q), 0), -2.0, device=device)
        best_idx = torch.zeros((len(q), 0), dtype=torch.long, device=device)
        for b0 in range(0, len(bank), bank_chunk):
            b = F.normalize(
                torch.from_numpy(np.asarray(bank[b0 : b0 + bank_chunk], dtype=np.float32)).to(device), dim=1
            )
            sim, idx = (q @ b.T).topk(min(k, len(b)), dim=1)
            best_sim, keep = torch.cat([best_sim, sim], 1).topk(min(k, best_sim.shape[1] + sim.shape[1]), dim=1)
            best_idx = torch.cat([best_idx, idx + b0], 1).gather(1, keep)
        weights = (best_sim / t).exp()
        one_hot = F.one_hot(bank_labels.to(device)[best_idx], num_classes).float()
        pred = (one_hot * weights.unsqueeze(-1)).sum(1).argmax(1)
        hits += (pred == query_labels[start : start + chunk].to(device)).sum()
    if world > 1:
        dist.all_reduce(hits)
    return 100.0 * hits.item() / len(queries)


# ------------------------------------------------------------------------------------ trained protocols
def _aug_numbers(seed: int, epoch: int, step: int, n: int) -> torch.Tensor:
    """``(n, 2·ATTEMPTS + 3)`` uniforms for a global batch of ``n``: crop draws, placement and flip; the same on
    every process and for every process count."""
    g = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + step) % (2**63))
    return torch.rand(n, 2 * ATTEMPTS + 3, generator=g, dtype=torch.float64)


def _step_slices(n: int, batch: int, drop_last: bool, world: int, rank: int, order: torch.Tensor):
    """Per step: ``(global batch size, offset of this rank's slice, this rank's indices)``."""
    steps = n // batch if drop_last else math.ceil(n / batch)
    out = []
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        bounds = np.linspace(0, len(idx), world + 1).round().astype(int)
        out.append((len(idx), int(bounds[rank]), idx[bounds[rank] : bounds[rank + 1]]))
    return out


def _loader(dataset, batches: list[list[int]], workers: int, device: torch.device) -> DataLoader:
    kw: dict[str, Any] = dict(num_workers=workers, pin_memory=device.type == "cuda")
    if workers > 0:
        kw["prefetch_factor"] = 2
    return DataLoader(dataset, batch_sampler=batches, **kw)


def _all_reduce_grads(params: list[torch.Tensor]) -> None:
    """Sum the gradients over processes (a process without a gradient adds zeros)."""
    if dist_info()[1] > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)


@torch.no_grad()
def evaluate_streamed(
    model: nn.Module,
    classifier: nn.Module,
    test: StreamedSplit,
    protocol: EvalProtocol,
    device: torch.device,
    dtype: torch.dtype | None,
    channels_last: bool,
    batch_size: int = 256,
) -> float:
    """Top-1 (%) over the whole test split (``Resize(round(crop·ratio))`` + ``CenterCrop(crop)``), its items
    split over processes and the hits summed."""
    rank, world = dist_info()
    crop = test.image_size
    data = test.eval_dataset(round(crop * protocol.test_resize_ratio), crop)
    mine = list(range(rank, len(test), world))
    norm = Normalize(test.mean, test.std).to(device)
    model.eval()
    classifier.eval()
    hits = torch.zeros((), dtype=torch.float64, device=device)
    batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    for b, x in zip(batches, _loader(data, batches, test.workers, device)):
        x = norm(x.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
            f = model(x)
        hits += (classifier(f.float()).argmax(1).cpu() == test.labels[b]).sum().item()
    if world > 1:
        dist.all_reduce(hits)
    return 100.0 * hits.item() / len(test)


def train_classifier_streamed(
    backbone: nn.Module,
    train: StreamedSplit,
    test: StreamedSplit,
    protocol: EvalProtocol,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One run of ``protocol`` on streamed splits; returns the same record as
    :func:`essl.evaluation.classifier.train_classifier`."""
    device = torch.device(device)
    rank, world = dist_info()
    finetune = protocol.backbone_lr is not None
    model = copy.deepcopy(backbone).to(device)
    model.requires_grad_(finetune)
    if channels_last:
        model = to_channels_last(model)
    norm = Normalize(train.mean, train.std).to(device)
    crop, n = train.image_size, len(train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dim = feature_dim(model, norm(train.eval_dataset()[0][None].to(device)))
        classifier = make_linear(dim, train.num_classes, protocol.init).to(device)
    optimizer = make_optimizer(protocol, classifier, model if finetune else None)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    batch = min(protocol.batch_size, n)
    steps = n // batch if protocol.drop_last else math.ceil(n / batch)
    factors = lr_schedule(protocol, steps)
    data = DecodedFiles(train.files, train.size, train.channels)
    test_curve: list[dict[str, Any]] = []
    loss_curve: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(protocol.epochs):
        model.train(finetune)
        classifier.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        plan = _step_slices(n, batch, protocol.drop_last, world, rank, order)
        total = torch.zeros((), dtype=torch.float64, device=device)
        # a process whose slice of the last, smaller global batch is empty still takes part in every step
        batches = iter(_loader(data, [idx.tolist() for _, _, idx in plan if len(idx)], train.workers, device))
        for step, (global_n, offset, idx) in enumerate(plan):
            it = epoch * steps + step
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * float(factors[it])
            optimizer.zero_grad(set_to_none=True)
            if len(idx):
                images, sizes = next(batches)
                u = _aug_numbers(seed, epoch, step, global_n)[offset : offset + len(idx)]
                with torch.no_grad():
                    boxes = sample_crop_boxes(sizes, protocol.crop_scale, (3 / 4, 4 / 3), u[:, :-1])
                    x = crop_resize(
                        images.to(device, non_blocking=True).float().div_(255), boxes, crop, protocol.resample
                    )
                    if protocol.resample == "bicubic":
                        x = x.clamp_(0, 1)
                    if protocol.hflip:
                        flip = (u[:, -1] < 0.5).to(device)
                        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                    x = norm(x)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                y = train.labels[idx].to(device)
                with torch.set_grad_enabled(finetune), autocast_context(device, dtype):
                    f = model(x)
                loss = F.cross_entropy(classifier(f.float()), y, reduction="sum") / global_n
                scaler.scale(loss).backward()
                total += loss.detach().double()
            _all_reduce_grads(params)
            scaler.step(optimizer)
            scaler.update()
        if world > 1:
            dist.all_reduce(total)
        loss_curve.append(total.item() / steps)
        end_epoch(
            protocol,
            epoch,
            loss_curve,
            test_curve,
            t0,
            progress,
            lambda: evaluate_streamed(model, classifier, test, protocol, device, dtype, channels_last),
        )
    return {**run_record(protocol, seed, test_curve, loss_curve, steps, batch, t0), "processes": world}


# ----------------------------------------------------------------------------------------------- diagnostics
def diagnose_streamed(
    backbone: nn.Module,
    train: StreamedSplit,
    test: StreamedSplit,
    group: Any,
    mean,
    std,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    weight_decay: float = 1e-4,
    seed: int = 0,
    max_train: int | None = 10000,
    max_test: int | None = 10000,
) -> dict:
    """:func:`essl.evaluation.diagnostics.diagnose` on streamed splits (un-augmented central crops decoded in
    workers); the same seeded subsets of at most ``max_train`` / ``max_test`` images, so only their orbit
    features, ``|G| · (max_train + max_test) · D`` floats, are held in memory, whatever the dataset's size."""
    device = torch.device(device)
    n_train, n_test = len(train), len(test)
    keep = seeded_subset(n_train, max_train, seed)
    if keep is not None:
        train = train.subset(keep)
    keep = seeded_subset(n_test, max_test, seed + 1)
    if keep is not None:
        test = test.subset(keep)
    per = max(1, 512 // group.order)

    def batches(split: StreamedSplit):
        order = list(range(len(split)))
        return _loader(
            split.eval_dataset(), [order[i : i + per] for i in range(0, len(order), per)], split.workers, device
        )

    test_f = orbit_features(backbone, batches(test), group, mean, std, device=device, dtype=dtype)
    train_f = orbit_features(backbone, batches(train), group, mean, std, device=device, dtype=dtype)
    return scores(group, train_f, test_f, weight_decay, seed, n_train, n_test)


# ------------------------------------------------------------------------------------------------ label list
def label_list_subset(files: list[Path], path: Path | str) -> torch.Tensor:
    """Sorted indices of the training images named in ``path``: one image file name per line, as in the SimCLR
    ImageNet subsets ``1percent.txt`` / ``10percent.txt`` (e.g. ``n01440764_10026.JPEG``). Names are matched
    against the file names (not the folders) of the train split; every name must be found."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EsslError(
            f"--label-list {path} does not exist. Pass a text file with one image file name per line "
            f"(e.g. the SimCLR 1percent.txt)."
        )
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise EsslError(f"--label-list {path} is empty; it must list image file names, one per line.")
    where: dict[str, int] = {}
    dup: set[str] = set()
    for i, f in enumerate(files):
        if f.name in where:
            dup.add(f.name)
        where[f.name] = i
    missing = [n for n in names if Path(n).name not in where]
    if missing:
        raise EsslError(
            f"{len(missing)} of the {len(names)} names in {path} are not in the train split (e.g. "
            f"{', '.join(missing[:3])}). The list must name files of this dataset's train folder."
        )
    clash = sorted({Path(n).name for n in names} & dup)
    if clash:
        raise EsslError(f"{path} names {clash[0]}, which several train images share; file names must be unique.")
    return torch.tensor(sorted({where[Path(n).name] for n in names}))
