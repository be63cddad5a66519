"""Backbones and heads. :func:`make_backbone` builds a backbone by name, or from your own factory."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable

from torch import nn

from essl.errors import EsslError
from essl.models.heads import (
    PROJECTORS,
    byol_predictor,
    method_predictor,
    mlp,
    mocov3_predictor,
    prediction_head,
    projector,
    projector_dim,
    simsiam_predictor,
)
from essl.models.momentum import ema_update, frozen_copy
from essl.models.resnet import ResNet, load_torchvision_state_dict, resnet18, resnet18_cifar, resnet50
from essl.models.small_cnn import SmallCNN
from essl.models.photonics import PhotonicsEncoder, phc_cnn_small

#: backbone name -> factory taking ``in_channels``; every backbone has an integer ``feature_dim``
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18_cifar": resnet18_cifar,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "small_cnn": SmallCNN,
    "phc_cnn": PhotonicsEncoder,
    "phc_cnn_small": phc_cnn_small,
}


def make_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """Backbone by name (``resnet18_cifar``, ``resnet18``, ``resnet50``, ``small_cnn``, ...) or by factory
    (``package.module:function``, see :func:`backbone_from_factory`); it has ``feature_dim``."""
    if ":" in name:
        return backbone_from_factory(name, in_channels)
    if name not in BACKBONES:
        raise EsslError(
            f"Unknown backbone {name!r}. Choose one of: {', '.join(BACKBONES)}, or give your own "
            f"factory as package.module:function."
        )
    return BACKBONES[name](in_channels=in_channels)


def feature_dim(backbone: nn.Module) -> int:
    """The width of the backbone's output features: its integer ``feature_dim`` attribute, which every backbone of
    :func:`make_backbone` has (a factory's backbone is checked for it)."""
    dim = getattr(backbone, "feature_dim", None)
    if not isinstance(dim, int):
        raise EsslError(f"{type(backbone).__name__} has no integer feature_dim (the width of its output features).")
    return dim


def backbone_from_factory(spec: str, in_channels: int = 3) -> nn.Module:
    """Bring your own backbone: ``spec`` is ``package.module:function``, a callable that returns an ``nn.Module``
    mapping images ``(N, C, H, W)`` to features ``(N, feature_dim)`` and exposing an integer ``feature_dim``.
    The function gets ``in_channels=C`` when it takes that argument. The module is imported as usual (installed,
    or on ``PYTHONPATH``; the current folder is tried too)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise EsslError(f"backbone {spec!r}: write a factory as package.module:function, e.g. mynets.convnets:tiny.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0] or os.getcwd() in sys.path:
            raise EsslError(f"backbone {spec!r}: cannot import {module_name} ({exc}).") from None
        sys.path.insert(0, os.getcwd())  # as `python -m` would: modules in the current folder are found
        return backbone_from_factory(spec, in_channels)
    factory: object = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise EsslError(f"backbone {spec!r}: {module_name} has no attribute {attr!r}.")
    if not callable(factory):
        raise EsslError(f"backbone {spec!r}: {attr} is not callable; point at a function or class.")
    try:
        takes_channels = "in_channels" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_channels = False
    model = factory(in_channels=in_channels) if takes_channels else factory()
    if not isinstance(model, nn.Module):
        raise EsslError(f"backbone {spec!r} returned a {type(model).__name__}, not a torch.nn.Module.")
    dim = getattr(model, "feature_dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise EsslError(
            f"backbone {spec!r}: the module needs an integer attribute feature_dim (the width of its "
            f"output features), found {dim!r}."
        )
    return model


__all__ = [
    "BACKBONES",
    "make_backbone",
    "backbone_from_factory",
    "feature_dim",
    "ResNet",
    "SmallCNN",
    "resnet18_cifar",
    "resnet18",
    "resnet50",
    "load_torchvision_state_dict",
    "mlp",
    "projector",
    "projector_dim",
    "simsiam_predictor",
    "prediction_head",
    "PROJECTORS",
    "byol_predictor",
    "mocov3_predictor",
    "method_predictor",
    "ema_update",
    "frozen_copy",
]
