"""What a pretraining run costs, in two numbers that every comparison prints next to its accuracies.

- **Backbone passes per image** (:func:`backbone_passes`), counted from the config: how many images of the size
  of the first SSL view go through the backbone for each training image in a step. Convolution cost grows with
  the pixel count, so a crop of side ``s`` counts ``(s / S)²`` of a view of side ``S``. The two SSL views count
  2; the prediction branch adds ``|G|·(s/S)²`` per predicted group (``r·(s/S)²`` with ``samples: r``) — 4 · (16/32)²
  = 1 for the paper's CIFAR-10 rotation crops; BYOL and MoCo v3 also run the momentum (target) network forward
  over both views, without a backward pass, which is counted apart.
- **Measured pretraining time** (:func:`pretraining_seconds`): the sum of the per-epoch training-step times that
  ``essl pretrain`` writes to ``metrics.jsonl`` (data augmentation and optimisation, not the kNN monitor).

An equal-epoch comparison of a method with its E- variant is not an equal-cost one: the E- variant pays for
its prediction branch in every step.
"""

from __future__ import annotations

from typing import Any

from essl.augmentation import resolve_view
from essl.groups import make_group
from essl.training.config import MOMENTUM_METHODS, PretrainConfig


def _side(view: str | dict, cfg: PretrainConfig) -> float:
    return float(resolve_view(view).size or cfg.image_size)  # size 0: the image as it is


def backbone_passes(cfg: PretrainConfig) -> dict[str, float]:
    """``{"grad": …, "no_grad": …}``: backbone passes per training image per step, in units of the first SSL
    view's pixel count (see the module docstring); ``no_grad`` counts the target network's forward passes."""
    ref = _side(cfg.views[0], cfg) ** 2
    grad = float(sum(_side(v, cfg) ** 2 / ref for v in cfg.views))
    for task in cfg.equivariance:
        images = (task.samples or make_group(task.group).order) + (1 if task.relative else 0)  # + the reference
        grad += images * _side(task.view, cfg) ** 2 / ref
    no_grad = float(sum(_side(v, cfg) ** 2 / ref for v in cfg.views)) if cfg.method in MOMENTUM_METHODS else 0.0
    return {"grad": grad, "no_grad": no_grad}


def passes_text(passes: dict[str, float]) -> str:
    """``3.00`` or ``2.00 (+2.00 target fwd)``."""
    return f"{passes['grad']:.2f}" + (f" (+{passes['no_grad']:.2f} target fwd)" if passes["no_grad"] else "")


def pretraining_seconds(metrics: list[dict[str, Any]]) -> float | None:
    """Measured time of the training steps of a run (sum of ``epoch_time_s``); None without metrics."""
    times = [m["epoch_time_s"] for m in metrics if "epoch_time_s" in m]
    return float(sum(times)) if times else None


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"
