"""Evaluation of frozen or fine-tuned representations under named protocols (docs/evaluation.md).

- :mod:`~essl.evaluation.catalog`     the paper's protocols as plain data (``cifar``, ``imagenet_*``, ``bt_finetune``)
- :mod:`~essl.evaluation.protocols`   a protocol adapted to a dataset, its schedule and label subsets
- :mod:`~essl.evaluation.classifier`  the augmented linear-probe / fine-tuning loop
- :mod:`~essl.training.knn`, :mod:`~essl.evaluation.linear`  kNN and the fast ``linear_lbfgs`` probe
- :mod:`~essl.evaluation.diagnostics` invariance and equivariance of an encoder to a transformation group
- :mod:`~essl.evaluation.evaluate`    evaluate a run or a released backbone and write ``eval/<name>.json``
- :mod:`~essl.evaluation.report`, :mod:`~essl.evaluation.plots`  ``essl report``: table and PNG plots

The names below are loaded on first use, so that importing a light module of this package (the catalog, the
command line's parsers) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from essl.evaluation.catalog import FINETUNE_PROTOCOLS, PROTOCOLS
    from essl.evaluation.diagnostics import OrbitAveraged, diagnose
    from essl.evaluation.protocols import get_protocol, stratified_subset
    from essl.training.features import extract_features
    from essl.training.knn import knn_accuracy, knn_predict

#: public name -> the module it lives in
_HOMES = {
    "extract_features": "essl.training.features",
    "knn_accuracy": "essl.training.knn",
    "knn_predict": "essl.training.knn",
    "PROTOCOLS": "essl.evaluation.catalog",
    "FINETUNE_PROTOCOLS": "essl.evaluation.catalog",
    "get_protocol": "essl.evaluation.protocols",
    "stratified_subset": "essl.evaluation.protocols",
    "diagnose": "essl.evaluation.diagnostics",
    "OrbitAveraged": "essl.evaluation.diagnostics",
}

__all__ = [
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "PROTOCOLS",
    "FINETUNE_PROTOCOLS",
    "get_protocol",
    "stratified_subset",
    "diagnose",
    "OrbitAveraged",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'essl.evaluation' has no attribute {name!r}")
