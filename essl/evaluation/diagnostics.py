"""Equivariance diagnostics of a frozen encoder ``f`` for a finite group ``G`` (Dangovski et al. 2022, §2-3).

E-SSL asks ``f`` to be *sensitive* to ``G`` (predictable ``g`` from ``f(g·x)``) where plain SSL makes it invariant.
Two measurements, for any backbone and any group of :mod:`essl.groups`:

- **invariance**: for every element ``g``, the mean cosine similarity ``cos(f(x), f(g·x))`` over the test split.
  1 for every ``g`` means ``f`` is invariant to ``G``. As a scale, the mean cosine similarity of the features
  of two *different* test images is reported too (``cross_image_similarity``): feature vectors after a ReLU
  are all non-negative, so even unrelated images score well above 0.
- **equivariance** (predictability of ``g``): a linear classifier (:func:`essl.evaluation.linear.
  fit_logistic_regression`, L-BFGS on standardised features) is fitted to predict ``g`` from ``f(g·x)`` for every
  ``g`` and every image of the train split and measured on the test split; chance is ``1/|G|``. An encoder
  trained to predict ``G`` scores high; an invariant one scores chance.

Groups act on [0, 1] images *before* normalisation, as in training (:mod:`essl.training.pretrain`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from essl.augmentation import Normalize
from essl.runtime import autocast_context
from essl.evaluation.linear import fit_logistic_regression, predict_logistic_regression
from essl.groups.base import TransformationGroup


@torch.no_grad()
def orbit_features(
    backbone: nn.Module,
    images: torch.Tensor | Iterable[torch.Tensor],
    group: TransformationGroup,
    mean,
    std,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Features of ``g·x`` for every element: ``(order, N, D)`` float32, row ``[k, i]`` = ``f(apply(x_i, k))``.
    ``images``: a tensor, or an iterable of image batches (e.g. a DataLoader of a streamed folder)."""
    device = torch.device(device)
    was = backbone.training
    backbone.eval()
    norm = Normalize(mean, std).to(device)
    per = max(1, batch_size // group.order)
    batches = (images[s : s + per] for s in range(0, len(images), per)) if isinstance(images, torch.Tensor) else images
    blocks = []
    for x in batches:
        x = x.to(device)
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        xg, _ = group.orbit(x)  # element-major: block k is apply(x, k)
        with autocast_context(device, dtype):
            f = backbone(norm(xg)).float().cpu()
        blocks.append(f.view(group.order, len(x), -1))
    backbone.train(was)
    return torch.cat(blocks, dim=1)


def invariance_scores(feats: torch.Tensor, seed: int = 0) -> dict:
    """Mean cosine similarity between ``f(x)`` and ``f(g·x)`` per element (``feats`` from :func:`orbit_features`).

    ``per_element[k]`` is for element ``k`` (element 0, the identity, is 1 by construction); ``mean`` averages
    the non-identity elements; ``cross_image_similarity`` is the mean cosine between ``f(x_i)`` and
    ``f(x_π(i))`` for a seeded derangement-like shift ``π`` of the images, the level of unrelated images.
    """
    z = F.normalize(feats.double(), dim=-1)
    per = [(z[0] * z[k]).sum(-1).mean().item() for k in range(z.shape[0])]
    n = z.shape[1]
    shift = int(torch.randint(1, max(n, 2), (1,), generator=torch.Generator().manual_seed(seed)).item()) if n > 1 else 0
    cross = (z[0] * z[0].roll(shift, 0)).sum(-1).mean().item() if n > 1 else float("nan")
    rest = per[1:] or per
    return {"per_element": per, "mean": sum(rest) / len(rest), "cross_image_similarity": cross}


def equivariance_scores(train_feats: torch.Tensor, test_feats: torch.Tensor, weight_decay: float = 1e-4) -> dict:
    """Accuracy (%) of a linear classifier predicting ``g`` from ``f(g·x)``: fitted on ``train_feats``, measured
    on ``test_feats`` (both ``(order, N, D)``); ``per_element[k]`` is the accuracy on images transformed by ``k``."""
    order = train_feats.shape[0]
    x_train = train_feats.reshape(-1, train_feats.shape[-1])
    y_train = torch.arange(order).repeat_interleave(train_feats.shape[1])
    params = fit_logistic_regression(x_train, y_train, order, weight_decay)
    pred = predict_logistic_regression(params, test_feats.reshape(-1, test_feats.shape[-1])).argmax(1)
    pred = pred.view(order, -1)
    per = [100.0 * (pred[k] == k).double().mean().item() for k in range(order)]
    confusion = torch.stack([torch.bincount(pred[k], minlength=order) for k in range(order)]).tolist()
    return {"accuracy": sum(per) / order, "per_element": per, "chance": 100.0 / order, "confusion": confusion}


def seeded_subset(n: int, cap: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of ``cap`` of ``n`` items drawn with ``seed``; ``None`` when all ``n`` are kept."""
    if cap is None or n <= cap:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def diagnose(
    backbone: nn.Module,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    group: TransformationGroup,
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
    """Both diagnostics for one group. The classifier of ``g`` is fitted on the orbits of at most ``max_train``
    train images and both scores are measured on at most ``max_test`` test images (seeded random subsets, drawn
    with ``seed`` and ``seed + 1``), so the orbit features held, ``|G| · (max_train + max_test) · D`` floats, are
    bounded whatever the dataset's size."""
    n_train, n_test = len(train_images), len(test_images)
    keep = seeded_subset(n_train, max_train, seed)
    if keep is not None:
        train_images = train_images[keep]
    keep = seeded_subset(n_test, max_test, seed + 1)
    if keep is not None:
        test_images = test_images[keep]
    test = orbit_features(backbone, test_images, group, mean, std, device=device, dtype=dtype)
    train = orbit_features(backbone, train_images, group, mean, std, device=device, dtype=dtype)
    return scores(group, train, test, weight_decay, seed, n_train, n_test)


def scores(
    group: TransformationGroup,
    train: torch.Tensor,
    test: torch.Tensor,
    weight_decay: float,
    seed: int,
    train_available: int,
    test_available: int,
) -> dict:
    """The diagnostics record from the orbit features of the train and test images used."""
    return {
        "group": group.name,
        "order": group.order,
        "invariance": invariance_scores(test, seed),
        "equivariance": equivariance_scores(train, test, weight_decay),
        "images": {
            "train": train.shape[1],
            "train_available": train_available,
            "test": test.shape[1],
            "test_available": test_available,
        },
    }


class OrbitAveraged(nn.Module):
    """``f̄(x) = mean_g f(g·x)``: an encoder made exactly invariant to ``group`` (``f̄(h·x) = f̄(x)`` because
    ``{g·h·x}`` is the orbit of ``x`` again). Expects the group to act on already-normalised input, which holds
    for permutations of pixels such as rotations and flips. A reference point for the diagnostics."""

    def __init__(self, backbone: nn.Module, group: TransformationGroup):
        super().__init__()
        self.backbone, self.group = backbone, group
        self.feature_dim = getattr(backbone, "feature_dim", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xg, _ = self.group.orbit(x)
        return self.backbone(xg).view(self.group.order, x.shape[0], -1).mean(0)
