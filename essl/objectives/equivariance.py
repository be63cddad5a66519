"""The E-SSL prediction objective (Dangovski et al. 2022; rdangovs/essl ``cifar10/main.py``):

    L_pred = CE( h(f(g·x)), g ),   summed into the total as  L = L_ssl + λ·L_pred,

where ``x`` is the prediction-branch view (a small crop), every element ``g`` of the group is applied to every
image (:meth:`TransformationGroup.orbit`), ``f`` is the backbone (gradients flow into it) and ``h`` the head.

Two options of the official photonics ``SimCLRwEE`` (rdangovs/essl ``photonics/ssl_mode.py``):

- **loss** (``eeloss``): ``xent`` is the cross-entropy above; ``l1`` and ``mse`` regress the element's *index*
  ``g`` (as a number) with a one-output head, ``|h(·) − g|`` or ``(h(·) − g)²`` averaged over the batch. The
  official code feeds its ``nrot``-output head to ``F.l1_loss(out, g.view(-1, 1))``, which broadcasts the index
  against every output; one output is the same regression without the copies. The "accuracy" of a regressed
  index is that of the prediction rounded to the nearest element.
- **relative** (``relative_ee``): the head sees two embeddings concatenated, ``h([f(a·x), f(g·a·x)])``, and
  predicts the element ``g`` that relates them. The official class concatenates the two halves of a ``2N``
  batch when it gets one, but its script never builds such a batch, so essl defines the pair: the reference
  ``a·x`` has one uniformly drawn element ``a`` applied, the second copy is every element ``g`` of the group (or
  ``samples`` drawn ones) applied on top of it, so ``g`` is identifiable only *relative* to the reference.
  :func:`relative_features` forms the pairs from the stacked embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Prediction losses: cross-entropy over the elements, or regression of the element index (official ``eeloss``).
PREDICTION_LOSSES = ("xent", "l1", "mse")


def head_outputs(loss: str, order: int) -> int:
    """Width of the prediction head: one logit per element for ``xent``, one number for ``l1``/``mse``."""
    return order if loss == "xent" else 1


def prediction_loss(
    outputs: torch.Tensor, labels: torch.Tensor, loss: str = "xent", order: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prediction loss of ``outputs`` (logits, or ``(N, 1)`` regressed indices) and the accuracy (detached).

    For ``l1``/``mse`` the accuracy rounds the regressed index to the nearest element in ``0..order-1``.
    """
    outputs = outputs.float()
    if loss == "xent":
        value = F.cross_entropy(outputs, labels)
        predicted = outputs.detach().argmax(1)
    else:
        pred = outputs.reshape(-1)
        target = labels.to(pred.dtype)
        value = F.l1_loss(pred, target) if loss == "l1" else F.mse_loss(pred, target)
        top = (order - 1) if order else None
        predicted = pred.detach().round().clamp(0, top).long()
    accuracy = (predicted == labels).float().mean()
    return value, accuracy


def relative_features(z: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """Pair embeddings for the relative prediction: ``z`` stacks ``R`` reference embeddings then ``n_pairs``
    transformed ones in blocks of ``R`` (element- or draw-major, as :meth:`TransformationGroup.orbit` and
    ``sample(repeats=r)`` return them); row ``j`` of the result is ``[z_ref[j mod R], z_transformed[j]]``."""
    n_ref = z.shape[0] - n_pairs
    if n_ref <= 0 or n_pairs % n_ref:
        raise ValueError(
            f"relative prediction needs R reference rows and a multiple of R transformed rows, got "
            f"{z.shape[0]} rows for {n_pairs} pairs"
        )
    ref, moved = z[:n_ref], z[n_ref:]
    return torch.cat([ref.repeat(n_pairs // n_ref, 1), moved], dim=1)
