"""Evaluation of frozen representations: kNN, linear probes and equivariance diagnostics."""

from essl.evaluation.features import extract_features
from essl.evaluation.knn import knn_accuracy, knn_predict

__all__ = ["extract_features", "knn_accuracy", "knn_predict"]
