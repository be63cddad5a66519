"""Fast linear probe on cached frozen features: multinomial logistic regression fitted with L-BFGS.

This is *not* the paper's linear-probe protocol (which trains with augmentation for 100 epochs, see
:mod:`essl.evaluation.protocols`); results from it are labelled ``linear_lbfgs`` wherever they appear.
Features are standardised with the training set's mean and std; the L2 penalty is ``weight_decay·‖W‖²/2``.

The features may be a tensor or a 2-D array on disk (the evaluation cache's float16 memmap). Where the float64
features would exceed ``chunk_bytes``, every evaluation of the objective reads them in blocks of rows and sums
the blocks' losses and gradients: the same objective (the cross-entropy is a sum over rows), so the memory held
is one block whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Largest float64 block of standardised features held at once (and the size up to which they stay in memory).
CHUNK_BYTES = 1 << 30


def _blocks(features: Any, rows: np.ndarray | None, n: int, step: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(slice of the n rows, float64 block)`` pairs; ``rows`` picks (sorted) rows of ``features`` first."""
    for i in range(0, n, step):
        part = slice(i, min(i + step, n))
        block = features[part] if rows is None else features[rows[part]]
        if isinstance(block, torch.Tensor):
            yield part, block.double()
        else:  # a copy: memmaps are read-only
            yield part, torch.from_numpy(np.array(block, dtype=np.float64))


def fit_logistic_regression(
    features: Any,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float = 1e-4,
    max_iter: int = 500,
    *,
    rows: np.ndarray | None = None,
    chunk_bytes: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Return ``(W, b, mean, std)`` of a softmax classifier on standardised features (``features[rows]`` when
    ``rows`` is given; ``labels`` are those of the rows used), reading at most ``chunk_bytes`` (default
    :data:`CHUNK_BYTES`) of float64 features at a time."""
    n = len(labels)
    dim = features.shape[1]
    step = max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (8 * dim))
    y = labels.long()
    held: list[tuple[slice, torch.Tensor]] | None = None
    if step >= n:  # everything fits in one block: read it once, standardise once
        ((part, x),) = _blocks(features, rows, n, step)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
        held = [(part, (x - mean) / std)]
    else:  # two passes over the blocks: the mean, then torch.std's unbiased estimate
        total = torch.zeros(dim, dtype=torch.float64)
        for _, x in _blocks(features, rows, n, step):
            total += x.sum(0)
        mean = total / n
        squares = torch.zeros(dim, dtype=torch.float64)
        for _, x in _blocks(features, rows, n, step):
            squares += ((x - mean) ** 2).sum(0)
        std = (squares / max(n - 1, 1)).sqrt().clamp_min(1e-8)

    def standardised() -> Iterator[tuple[slice, torch.Tensor]]:
        if held is not None:
            yield from held
        else:
            for part, x in _blocks(features, rows, n, step):
                yield part, (x - mean) / std

    w = torch.zeros(dim, num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        value = loss.detach()
        for part, x in standardised():  # the mean cross-entropy as a sum of per-block terms
            block = F.cross_entropy(x @ w + b, y[part], reduction="sum") / n
            block.backward()
            value = value + block.detach()
        return value

    opt.step(closure)
    return w.detach(), b.detach(), mean, std


def predict_logistic_regression(params: tuple[torch.Tensor, ...], features: torch.Tensor) -> torch.Tensor:
    w, b, mean, std = params
    return ((features.double() - mean) / std) @ w + b


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    weight_decay: float = 1e-4,
) -> float:
    """Test top-1 accuracy (%) of :func:`fit_logistic_regression`."""
    params = fit_logistic_regression(train_features, train_labels, num_classes, weight_decay)
    pred = predict_logistic_regression(params, test_features).argmax(1)
    return 100.0 * (pred == test_labels).double().mean().item()
