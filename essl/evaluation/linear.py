"""Fast linear probe on cached frozen features: multinomial logistic regression fitted with L-BFGS.

This is *not* the paper's linear-probe protocol (which trains with augmentation for 100 epochs, see
:mod:`essl.evaluation.protocols`); results from it are labelled ``linear_lbfgs`` wherever they appear.
Features are standardised with the training set's mean and std; the L2 penalty is ``weight_decay·‖W‖²/2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 1e-4, max_iter: int = 500
) -> tuple[torch.Tensor, ...]:
    """Return ``(W, b, mean, std)`` of a softmax classifier on standardised features."""
    x = features.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
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
    y = labels.long()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

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
