"""Evaluation of frozen or fine-tuned representations under named protocols (docs/evaluation.md).

- :mod:`~essl.evaluation.protocols`   the paper's protocols as data (``cifar``, ``imagenet_*``, ``bt_finetune``)
- :mod:`~essl.evaluation.classifier`  the augmented linear-probe / fine-tuning loop
- :mod:`~essl.training.knn`, :mod:`~essl.evaluation.linear`  kNN and the fast ``linear_lbfgs`` probe
- :mod:`~essl.evaluation.diagnostics` invariance and equivariance of an encoder to a transformation group
- :mod:`~essl.evaluation.evaluate`    evaluate a run or a released backbone and write ``eval/<name>.json``
- :mod:`~essl.evaluation.report`, :mod:`~essl.evaluation.plots`  ``essl report``: table and PNG plots
"""

from essl.evaluation.diagnostics import OrbitAveraged, diagnose
from essl.training.features import extract_features
from essl.training.knn import knn_accuracy, knn_predict
from essl.evaluation.protocols import FINETUNE_PROTOCOLS, PROTOCOLS, get_protocol, stratified_subset

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
