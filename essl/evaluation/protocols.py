"""Adapting the protocols of :mod:`essl.evaluation.catalog` to a dataset, and the pieces every protocol run uses:
its learning-rate schedule, label subsets and result names.

Images that are not the protocol's size: every crop is taken at the stored image size ``S`` and the test resize is
``round(S · 36/32)`` (CIFAR) or ``round(S · 256/224)`` (ImageNet), i.e. the protocol's ratio; the horizontal flip
is dropped where the dataset's own view recipe drops it (digits). :func:`adapt_protocol` records each choice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from essl.augmentation import get_recipe
from essl.evaluation.catalog import FINETUNE_PROTOCOLS, PROTOCOLS, EvalProtocol
from essl.errors import EsslError
from essl.training.validation import OPTION_RULES


# The view recipe each dataset is pretrained with (essl/augmentation/views.py); a protocol keeps its horizontal
# flip only if that recipe flips too.
DATASET_VIEW_RECIPE = {"mnist5k": "mnist", "cifar10": "cifar", "cifar100": "cifar", "folder": "imagenet1"}


def get_protocol(name: str) -> EvalProtocol:
    """A probe or fine-tuning protocol by name."""
    table = {**PROTOCOLS, **FINETUNE_PROTOCOLS}
    if name not in table:
        raise EsslError(
            f"Unknown evaluation protocol {name!r}. Linear probes: {', '.join(PROTOCOLS)} (and "
            f"linear_lbfgs); fine-tuning: {', '.join(FINETUNE_PROTOCOLS)}."
        )
    return table[name]


def adapt_protocol(
    protocol: EvalProtocol,
    dataset: str,
    image_size: int,
    *,
    epochs: int | None = None,
    repeats: int | None = None,
    batch_size: int | None = None,
    n_train: int | None = None,
) -> tuple[EvalProtocol, dict[str, Any]]:
    """Protocol as run on ``dataset`` with images of ``image_size`` px, plus the record of every change.

    Returns ``(protocol used, record)``; ``record`` has ``adapted`` (choices forced by the data: sizes, flip,
    a batch larger than the training set) and ``overrides`` (choices of the user, e.g. fewer epochs), each entry
    ``{"protocol": value in the paper, "used": value used, "why": reason}``.
    """
    adapted: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    native = 32 if protocol.test_resize_ratio == 36 / 32 else 224
    resize = round(image_size * protocol.test_resize_ratio)
    adapted["crop"] = {
        "protocol": native,
        "used": image_size,
        "why": "crops are taken at the stored image size" if image_size != native else "as protocol",
    }
    adapted["test_resize"] = {
        "protocol": round(native * protocol.test_resize_ratio),
        "used": resize,
        "why": f"round({image_size}·{protocol.test_resize_ratio:.4g}), the protocol's resize/crop ratio",
    }
    hflip = protocol.hflip
    recipe = DATASET_VIEW_RECIPE.get(dataset)
    if hflip and recipe is not None and get_recipe(recipe).hflip == 0:
        hflip = False
        adapted["hflip"] = {
            "protocol": True,
            "used": False,
            "why": f"the {dataset} view recipe {recipe!r} has no flips (digits are not mirror-symmetric)",
        }
    for key, value in (("epochs", epochs), ("repeats", repeats), ("batch_size", batch_size)):
        if value is not None and value != getattr(protocol, key):
            OPTION_RULES[key].check(f"--{key.replace('_', '-')}", value)
            overrides[key] = {"protocol": getattr(protocol, key), "used": value, "why": "user override"}
    used = dataclasses.replace(
        protocol,
        hflip=hflip,
        epochs=protocol.epochs if epochs is None else epochs,
        repeats=protocol.repeats if repeats is None else repeats,
        batch_size=protocol.batch_size if batch_size is None else batch_size,
    )
    if n_train is not None and used.batch_size > n_train:
        adapted["batch_size"] = {
            "protocol": used.batch_size,
            "used": n_train,
            "why": f"the training set has only {n_train} images: one full batch per epoch",
        }
        used = dataclasses.replace(used, batch_size=n_train)
    return used, {"adapted": adapted, "overrides": overrides}


def lr_schedule(protocol: EvalProtocol, steps_per_epoch: int) -> np.ndarray:
    """Learning-rate factor (multiplies each parameter group's lr) for every step of the run.

    ``cosine_step``: ``0.5·(1 + cos(π·s/S))`` for step ``s`` of ``S`` (the official ``adjust_learning_rate`` with
    no warm-up); ``cosine_epoch``: the same per epoch, held within the epoch (``CosineAnnealingLR`` stepped per
    epoch, or SimSiam's ``adjust_learning_rate``); ``constant``: 1.
    """
    total = protocol.epochs * steps_per_epoch
    if protocol.schedule == "constant":
        return np.ones(total)
    if protocol.schedule == "cosine_step":
        return 0.5 * (1 + np.cos(np.pi * np.arange(total) / total))
    if protocol.schedule == "cosine_epoch":
        per_epoch = 0.5 * (1 + np.cos(np.pi * np.arange(protocol.epochs) / protocol.epochs))
        return np.repeat(per_epoch, steps_per_epoch)
    raise ValueError(f"unknown schedule {protocol.schedule!r}")


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a seeded, class-stratified subset: ``max(1, round(fraction·n_c))`` of each class ``c``
    (the few-label setting: 1% / 10% of the labels, cf. the Barlow Twins ``--train-percent`` option)."""
    OPTION_RULES["label_fraction"].check("--label-fraction", fraction)
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        n = max(1, round(fraction * len(idx)))
        picked.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(picked).sort().values


def result_name(base: str, record: dict[str, Any], label_fraction: float | None = None, label_list: Any = None) -> str:
    """File stem of a result: ``base`` plus every user override and the label fraction (or the label list's file
    name), so that a short or few-label run never replaces a full-protocol result (e.g.
    ``probe-cifar-epochs2-labels1pct``, ``probe-imagenet_simclr-labels-1percent``)."""
    parts = [base]
    for key, entry in sorted(record.get("overrides", {}).items()):
        used = entry["used"]
        parts.append(f"{key.replace('_', '')}{used:g}" if isinstance(used, float) else f"{key.replace('_', '')}{used}")
    if label_list:
        parts.append(f"labels-{Path(str(label_list)).stem}")
    elif label_fraction is not None and label_fraction < 1:
        parts.append(f"labels{label_fraction * 100:g}pct")
    return "-".join(parts)
