"""Backbones and heads. :func:`make_backbone` builds a backbone by name."""

from __future__ import annotations

from torch import nn

from essl.errors import EsslError
from essl.models.heads import mlp, prediction_head, projector, projector_dim, simsiam_predictor
from essl.models.resnet import ResNet, load_torchvision_state_dict, resnet18, resnet18_cifar, resnet50
from essl.models.small_cnn import SmallCNN
from essl.models.photonics import PhotonicsEncoder, phc_cnn_small

BACKBONES = {"resnet18_cifar": resnet18_cifar, "resnet18": resnet18, "resnet50": resnet50, "small_cnn": SmallCNN,
             "phc_cnn": PhotonicsEncoder, "phc_cnn_small": phc_cnn_small}


def make_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """Backbone by name (``resnet18_cifar``, ``resnet18``, ``resnet50``, ``small_cnn``); has ``feature_dim``."""
    if name not in BACKBONES:
        raise EsslError(f"Unknown backbone {name!r}. Choose one of: {', '.join(BACKBONES)}.")
    return BACKBONES[name](in_channels=in_channels)


__all__ = ["BACKBONES", "make_backbone", "ResNet", "SmallCNN", "resnet18_cifar", "resnet18", "resnet50",
           "load_torchvision_state_dict", "mlp", "projector", "projector_dim", "simsiam_predictor",
           "prediction_head"]
