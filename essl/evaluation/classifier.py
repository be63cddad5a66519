"""Train a linear classifier on a backbone with augmentation, following an :class:`EvalProtocol`.

One loop serves both protocol kinds (rdangovs/essl ``cifar10/main.py`` and ``imagenet/*/linear_probe.py``):

- **linear probe** (``protocol.backbone_lr is None``): the backbone stays in eval mode and is never updated;
  features are computed under ``no_grad`` (as the official ``eval_loop`` and ``linear_probe.py`` do);
- **fine-tuning**: a copy of the backbone is trained end to end in train mode with its own lr.

Augmentation runs batched on the device with per-sample random parameters (kornia, through
:func:`essl.augmentation.build_view`): train ``RandomResizedCrop(S, scale)`` (+ horizontal flip), test
``Resize(round(S·ratio)) + CenterCrop(S)`` (:func:`center_view`).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, TypeVar
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from essl.augmentation import Normalize, ViewRecipe, build_view
from essl.data import ImageData
from essl.runtime import autocast_context
from essl.evaluation.catalog import EvalProtocol
from essl.evaluation.protocols import lr_schedule
from essl.training.optim import LARS

#: the splits a trainer takes: ImageData (:func:`train_classifier`) or streamed ones
Split = TypeVar("Split")


def train_view(protocol: EvalProtocol, size: int, channels: int, mean, std) -> nn.Module:
    """The protocol's training augmentation as a batched module (uint8 in, normalised float out)."""
    recipe = ViewRecipe(
        size=size,
        scale=protocol.crop_scale,
        hflip=0.5 if protocol.hflip else 0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        resample=protocol.resample,
    )
    return build_view(recipe, channels, mean, std)


def center_view(x: torch.Tensor, resize: int, crop: int, resample: str = "bicubic") -> torch.Tensor:
    """``Resize(resize)`` (square images: both sides) then ``CenterCrop(crop)``; uint8 or [0, 1] in, [0, 1] out.

    Values are clamped to [0, 1] as an 8-bit PIL image would be (bicubic overshoots); anti-aliased when shrinking.
    """
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if x.shape[-1] != resize or x.shape[-2] != resize:
        x = F.interpolate(
            x, size=(resize, resize), mode=resample, align_corners=False, antialias=resize < x.shape[-1]
        ).clamp_(0, 1)
    top = (resize - crop) // 2
    left = (resize - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def feature_dim(backbone: nn.Module, sample: torch.Tensor) -> int:
    """The backbone's ``feature_dim`` attribute, or the width of its output on one sample."""
    dim = getattr(backbone, "feature_dim", None)
    if isinstance(dim, int):
        return dim
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = backbone(sample[:1]).shape[1]
    backbone.train(was)
    return dim


def make_linear(in_dim: int, classes: int, init: str) -> nn.Linear:
    layer = nn.Linear(in_dim, classes)
    if init == "normal_0.01":
        nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)
    return layer


def make_optimizer(protocol: EvalProtocol, classifier: nn.Module, backbone: nn.Module | None) -> torch.optim.Optimizer:
    """SGD (or LARS over SGD) with the classifier at ``lr`` and, when fine-tuning, the backbone at ``backbone_lr``.

    Each group keeps its protocol lr in ``base_lr``; the schedule multiplies it."""
    groups = [{"params": list(classifier.parameters()), "base_lr": protocol.lr, "lars_exclude": False}]
    if backbone is not None:
        groups.append(
            {
                "params": [p for p in backbone.parameters() if p.requires_grad],
                "base_lr": protocol.backbone_lr,
                "lars_exclude": False,
            }
        )
    for g in groups:
        g["lr"] = g["base_lr"]
    if protocol.optimizer == "lars":  # apex LARC(trust 0.001, clip False) over SGD, on every parameter
        return LARS(groups, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    return torch.optim.SGD(groups, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)


@torch.no_grad()
def evaluate(
    backbone: nn.Module,
    classifier: nn.Module,
    test: ImageData,
    protocol: EvalProtocol,
    device: torch.device,
    dtype: torch.dtype | None = None,
    batch_size: int = 512,
    channels_last: bool = False,
) -> float:
    """Test top-1 accuracy (%) over the whole test split (exact count, not a mean of batch means)."""
    size = test.image_size
    resize = round(size * protocol.test_resize_ratio)
    norm = Normalize(test.mean, test.std).to(device)
    labels = test.require_labels()
    backbone.eval()
    classifier.eval()
    hits = 0
    for start in range(0, len(test), batch_size):
        x = norm(center_view(test.images[start : start + batch_size].to(device), resize, size, protocol.resample))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
            f = backbone(x)
        pred = classifier(f.float()).argmax(1).cpu()
        hits += (pred == labels[start : start + batch_size]).sum().item()
    return 100.0 * hits / len(test)


def train_classifier(
    backbone: nn.Module,
    train: ImageData,
    test: ImageData,
    protocol: EvalProtocol,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One run of ``protocol``: returns ``top1`` (the protocol's selected number), ``top1_final``,
    ``top1_best``, ``best_epoch``, per-epoch ``test_curve`` (epochs where the test set was measured) and
    ``loss_curve`` (mean train loss per epoch).

    The test set is measured after every epoch when the protocol selects the best epoch, else after the last.
    Both work on a copy of ``backbone`` (moved to ``device``, channels-last if asked), which stays untouched.
    """
    device = torch.device(device)
    # kornia draws augmentation parameters from the global generator: seed it, and restore the caller's state
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _train_classifier(backbone, train, test, protocol, seed, device, dtype, channels_last, progress)


def _train_classifier(backbone, train, test, protocol, seed, device, dtype, channels_last, progress):
    order_gen = torch.Generator().manual_seed(seed)
    finetune = protocol.backbone_lr is not None
    model = copy.deepcopy(backbone).to(device)
    model.requires_grad_(finetune)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(finetune)
    size, n = train.image_size, len(train)
    view = train_view(protocol, size, train.channels, train.mean, train.std).to(device)
    dim = feature_dim(model, Normalize(train.mean, train.std).to(device)(train.images[:1].to(device)))
    classifier = make_linear(dim, train.num_classes, protocol.init).to(device)
    optimizer = make_optimizer(protocol, classifier, model if finetune else None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    batch = min(protocol.batch_size, n)
    steps = n // batch if protocol.drop_last else math.ceil(n / batch)
    factors = lr_schedule(protocol, steps)
    test_curve, loss_curve = [], []
    t0 = time.perf_counter()
    for epoch in range(protocol.epochs):
        model.train(finetune)
        classifier.train()
        order = torch.randperm(n, generator=order_gen)
        total = 0.0
        for step in range(steps):
            it = epoch * steps + step
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * float(factors[it])
            idx = order[step * batch : (step + 1) * batch]
            with torch.no_grad():
                x = view(train.images[idx].to(device, non_blocking=True))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            y = train.labels[idx].to(device)
            with torch.set_grad_enabled(finetune), autocast_context(device, dtype):
                f = model(x)
            loss = F.cross_entropy(classifier(f.float()), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item()
        loss_curve.append(total / steps)
        end_epoch(
            protocol,
            epoch,
            loss_curve,
            test_curve,
            t0,
            progress,
            lambda: evaluate(model, classifier, test, protocol, device, dtype, channels_last=channels_last),
        )
    return run_record(protocol, seed, test_curve, loss_curve, steps, batch, t0)


def end_epoch(
    protocol: EvalProtocol,
    epoch: int,
    loss_curve: list[float],
    test_curve: list[dict],
    t0: float,
    progress: Callable[[str], None] | None,
    measure: Callable[[], float],
) -> None:
    """After an epoch: measure the test set (every epoch when the protocol selects the best one, else after the
    last) and say where the run is."""
    if protocol.select == "best" or epoch + 1 == protocol.epochs:
        acc = measure()
        test_curve.append({"epoch": epoch + 1, "top1": acc})
        if progress:
            progress(
                f"epoch {epoch + 1}/{protocol.epochs}: loss {loss_curve[-1]:.4f}, test top-1 {acc:.2f}% "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    elif progress:
        progress(f"epoch {epoch + 1}/{protocol.epochs}: loss {loss_curve[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")


def run_record(
    protocol: EvalProtocol,
    seed: int,
    test_curve: list[dict],
    loss_curve: list[float],
    steps: int,
    batch: int,
    t0: float,
) -> dict[str, Any]:
    """One run's record: the protocol's selected top-1 (best or final epoch) and the curves."""
    best = max(test_curve, key=lambda r: r["top1"])
    final = test_curve[-1]["top1"]
    return {
        "seed": seed,
        "top1": best["top1"] if protocol.select == "best" else final,
        "top1_final": final,
        "top1_best": best["top1"],
        "best_epoch": best["epoch"],
        "test_curve": test_curve,
        "loss_curve": loss_curve,
        "steps_per_epoch": steps,
        "batch_size": batch,
        "seconds": time.perf_counter() - t0,
    }


def run_protocol(
    backbone: nn.Module,
    train: Split,
    test: Split,
    protocol: EvalProtocol,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: Callable[[str], None] | None = None,
    trainer: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``protocol.repeats`` runs with seeds ``seed, seed+1, …`` on the same encoder: mean ± std (ddof 0, as the
    official ``np.std``) of each run's selected top-1, plus every run. ``trainer`` is one run
    (:func:`train_classifier`, or :func:`essl.evaluation.streamed.train_classifier_streamed` for folders read
    from disk)."""
    run_one: Callable[..., dict[str, Any]] = trainer or train_classifier
    runs = []
    for r in range(protocol.repeats):
        say = (lambda m, r=r: progress(f"[run {r + 1}/{protocol.repeats}] {m}")) if progress else None
        runs.append(
            run_one(
                backbone,
                train,
                test,
                protocol,
                seed=seed + r,
                device=device,
                dtype=dtype,
                channels_last=channels_last,
                progress=say,
            )
        )
    accs = torch.tensor([r["top1"] for r in runs], dtype=torch.float64)
    return {
        "top1": accs.mean().item(),
        "top1_std": accs.std(unbiased=False).item() if len(runs) > 1 else 0.0,
        "runs": runs,
    }
