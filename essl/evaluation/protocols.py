"""The evaluation protocols of the paper, as data: every number essl reports names one of these.

Supervised protocols on a backbone, as read in the official code (rdangovs/essl ``cifar10/main.py``,
``imagenet/*/linear_probe.py``):

================== ================================================================================================
``cifar``          the paper's CIFAR-10 linear probe (``cifar10/main.py:eval_loop``): frozen backbone in eval mode,
                   Linear(d→classes), SGD momentum 0.9, lr 30, wd 0, batch 256 (``drop_last``), 100 epochs,
                   per-step cosine to 0 without warm-up; train RandomResizedCrop(32, bicubic, scale 0.08-1) +
                   horizontal flip, test Resize(36, bicubic) + CenterCrop(32); accuracy after the last epoch;
                   5 repeats on the same encoder reported as mean ± std (``np.std``, ddof 0).
``imagenet_simclr`` ``imagenet/simclr/linear_probe.py``: fc N(0, 0.01), zero bias; SGD momentum 0.9, lr 1.0,
                   wd 1e-6, batch 256, 100 epochs; the script builds a cosine scheduler but never steps it, so the
                   lr is *constant*; train RandomResizedCrop(224) + flip, test Resize(256) + CenterCrop(224)
                   (torchvision's default bilinear); the best top-1 over epochs.
``imagenet_bt``    ``imagenet/barlowtwins/linear_probe.py``: as above with lr 0.3 and the cosine stepped once per
                   epoch; best top-1 over epochs.
``imagenet_simsiam`` ``imagenet/simsiam/linear_probe.py`` (official SimSiam ``main_lincls`` with ``--lars``):
                   LARS (trust 0.001, on every parameter) over SGD momentum 0.9, batch 4096, lr 0.1·4096/256 = 1.6,
                   wd 0, 90 epochs, cosine per epoch; best top-1 over epochs.
``bt_finetune``    full fine-tuning, the Barlow Twins ``evaluate.py --weights finetune`` recipe of its README
                   (semi-supervised command): backbone in train mode, SGD momentum 0.9, classifier lr 0.5,
                   backbone lr 0.005, wd 0, batch 256, 20 epochs, cosine per epoch, ImageNet augmentation;
                   best top-1 over epochs. The E-SSL paper reports no fine-tuning numbers (paper.md §5.5).
================== ================================================================================================

The fast probe ``linear_lbfgs`` (:mod:`essl.evaluation.linear`) is not a paper protocol; it is listed in
:data:`OTHER_PROTOCOLS` so that its name is known everywhere.

Images that are not the protocol's size: every crop is taken at the stored image size ``S`` and the test resize is
``round(S · 36/32)`` (CIFAR) or ``round(S · 256/224)`` (ImageNet), i.e. the protocol's ratio; the horizontal flip
is dropped where the dataset's own view recipe drops it (digits). :func:`adapt_protocol` records each choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from essl.augmentation import get_recipe
from essl.errors import EsslError
from essl.training.validation import OPTION_RULES


@dataclass(frozen=True)
class EvalProtocol:
    """One supervised evaluation protocol. ``backbone_lr`` None means a frozen backbone (linear probe)."""

    name: str
    source: str
    lr: float  # classifier lr (already scaled by batch/256 where the code does)
    epochs: int
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd | lars
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine_step"  # cosine_step | cosine_epoch | constant
    select: str = "final"  # final: accuracy after the last epoch; best: best epoch on test
    repeats: int = 1
    init: str = "torch_default"  # torch_default | normal_0.01 (weights N(0, 0.01), bias 0)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    resample: str = "bicubic"
    test_resize_ratio: float = 36 / 32  # test Resize(round(S·ratio)) + CenterCrop(S)
    hflip: bool = True
    drop_last: bool = True
    backbone_lr: float | None = None  # fine-tuning: lr of the backbone (trained in train mode)

    @property
    def kind(self) -> str:
        return "linear_probe" if self.backbone_lr is None else "finetune"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        d["kind"] = self.kind
        return d


_CIFAR_SRC = "rdangovs/essl cifar10/main.py eval_loop"
PROTOCOLS: dict[str, EvalProtocol] = {
    "cifar": EvalProtocol("cifar", _CIFAR_SRC, lr=30.0, epochs=100, repeats=5),
    "imagenet_simclr": EvalProtocol(
        "imagenet_simclr",
        "rdangovs/essl imagenet/simclr/linear_probe.py (scheduler never stepped: constant lr)",
        lr=1.0,
        epochs=100,
        weight_decay=1e-6,
        schedule="constant",
        select="best",
        init="normal_0.01",
        resample="bilinear",
        test_resize_ratio=256 / 224,
        drop_last=False,
    ),
    "imagenet_bt": EvalProtocol(
        "imagenet_bt",
        "rdangovs/essl imagenet/barlowtwins/linear_probe.py",
        lr=0.3,
        epochs=100,
        weight_decay=1e-6,
        schedule="cosine_epoch",
        select="best",
        init="normal_0.01",
        resample="bilinear",
        test_resize_ratio=256 / 224,
        drop_last=False,
    ),
    "imagenet_simsiam": EvalProtocol(
        "imagenet_simsiam",
        "rdangovs/essl imagenet/simsiam/linear_probe.py --lars (official SimSiam main_lincls)",
        lr=1.6,
        epochs=90,
        batch_size=4096,
        optimizer="lars",
        weight_decay=0.0,
        schedule="cosine_epoch",
        select="best",
        init="normal_0.01",
        resample="bilinear",
        test_resize_ratio=256 / 224,
        drop_last=False,
    ),
}

FINETUNE_PROTOCOLS: dict[str, EvalProtocol] = {
    "bt_finetune": EvalProtocol(
        "bt_finetune",
        "facebookresearch/barlowtwins README 'semi-supervised' command: evaluate.py --weights "
        "finetune --epochs 20 --lr-backbone 0.005 --lr-classifier 0.5 --weight-decay 0",
        lr=0.5,
        backbone_lr=0.005,
        epochs=20,
        weight_decay=0.0,
        schedule="cosine_epoch",
        select="best",
        init="normal_0.01",
        resample="bilinear",
        test_resize_ratio=256 / 224,
        drop_last=False,
    ),
}

OTHER_PROTOCOLS = {
    "linear_lbfgs": "essl's fast probe: L-BFGS multinomial logistic regression on cached, un-augmented, standardised "
    "features (not a paper protocol)",
    "knn": "weighted kNN, k=200, t=0.1, cosine similarity, exp(sim/t) votes (official kNN monitor, "
    "rdangovs/essl cifar10/main.py)",
}

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
    used = dataclasses.replace(protocol, hflip=hflip)
    for key, value in (("epochs", epochs), ("repeats", repeats), ("batch_size", batch_size)):
        if value is not None and value != getattr(protocol, key):
            OPTION_RULES[key].check(f"--{key.replace('_', '-')}", value)
            overrides[key] = {"protocol": getattr(protocol, key), "used": value, "why": "user override"}
            used = dataclasses.replace(used, **{key: value})
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
