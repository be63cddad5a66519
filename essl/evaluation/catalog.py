"""The evaluation catalog as plain data: the paper's protocols, the fast probes' settings and the released
architectures. Every number essl reports names one of these protocols.

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

This module imports nothing heavy (no torch, no numpy), so that ``essl --help`` lists the protocols and their
defaults without loading torch; :mod:`essl.evaluation.protocols` adapts and schedules them, and
:mod:`essl.evaluation.evaluate` runs them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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

#: ``linear_lbfgs``'s L2 penalty
LBFGS_WEIGHT_DECAY = 1e-4
#: ``essl diagnose``: train images whose orbits fit the classifier of g
DIAGNOSTICS_MAX_TRAIN = 10000
#: ``essl diagnose``: test images the scores are measured on (bounds the orbit features held)
DIAGNOSTICS_MAX_TEST = 10000
#: architectures of a released backbone file (``--backbone-file ... --arch``)
RELEASED_ARCHS = ("resnet50", "resnet18", "resnet18_cifar")
