"""Weights in other people's layouts: recognise a loaded checkpoint and split it into essl's parts.

One place for every key layout essl reads (warm starts with ``init_from``, ``--backbone-file`` in evaluation,
``essl.load_backbone``). :func:`split_layout` takes the object ``torch.load(..., weights_only=True)`` returned and
gives :class:`Weights`: essl-keyed state dicts for ``backbone`` (essl's ResNets use torchvision's keys without
``fc.*``), ``projector``, ``predictor``, the prediction heads (``heads.<group>``; the official heads predict
rotations, so they become ``heads.rotation``) and the ``online_head`` linear classifier.

Layouts of the official code (rdangovs/essl):

- ``resnet50.pth`` saved at the end of ``imagenet/simclr/main.py`` and ``imagenet/barlowtwins/main.py``:
  ``{backbone, projector, head}`` (``head`` is the online ImageNet classifier, not the rotation head);
- ``checkpoint.pth`` of the same scripts: ``{epoch, model: {module.backbone.*, module.projector.*,
  module.online_head.*, module.rotation_projector.*, module.bn.*}, optimizer}``;
- ``imagenet/simsiam/main.py`` checkpoints: ``{epoch, arch, state_dict: {module.backbone.*, module.projector.*,
  module.predictor.*, module.rotation_projector.*}, optimizer}`` (the original SimSiam code names the backbone
  ``module.encoder.*``, also read);
- ``cifar10/main.py`` checkpoints: ``{epoch, state_dict}`` of its ``Branch``: ``encoder.*`` (the 3×3-stem
  ResNet-18), ``projector.net.*``, ``predictor2.*`` (the rotation head) and ``net.0.*``/``net.1.*`` (the same
  modules again, through the ``net`` Sequential);
- ``photonics/main.py`` pretraining files ``EP100…``/``EP200…``: ``{model_state_dict: {enc.enc_block2d.*,
  enc.fcpart.*}, ptepoch}`` (the ``Enc`` of ``phc_models.py``), and the state of a whole ``SimCLR``/``SimCLRwEE``
  model of ``ssl_mode.py`` (``encoder.enc.*``, ``projector.projector.proj_block.*``, ``classifier.*``) or of the
  fine-tuning ``Net`` (``enc.*``, ``predictor.*``, the DOS head): the encoder becomes the ``phc_cnn`` backbone
  (:func:`essl.models.photonics.official_encoder_state`), the projector's Sequential indices equal those of
  :func:`essl.models.photonics.shared_norm_mlp`;

and essl's own: a run checkpoint ``{model, config, ...}`` and a bare backbone state dict (an export, or a
torchvision ResNet). The Sequential indices of the official projectors and heads equal those of
:func:`essl.models.heads.mlp`, so those parts load without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from essl.errors import EsslError
from essl.models.photonics import official_encoder_state


@dataclass
class Weights:
    """The parts found in a file (``{part: essl-keyed state dict}``) and its layout: ``essl-run``,
    ``official-resnet50``, ``official-checkpoint``, ``official-simsiam``, ``official-cifar10``,
    ``official-photonics`` or ``bare``."""

    layout: str
    parts: dict[str, dict[str, torch.Tensor]]
    ignored: list[str] = field(default_factory=list)  # top-level groups of keys that have no essl counterpart

    @property
    def backbone(self) -> dict[str, torch.Tensor]:
        return self.parts["backbone"]


def _under(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _tensors(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _official_model(state: dict[str, torch.Tensor], layout: str) -> Weights:
    """``module.backbone.* / projector.* / predictor.* / rotation_projector.* / online_head.*`` (ImageNet)."""
    state = _strip_module(state)
    backbone = _under(state, "backbone.") or _under(state, "encoder.")
    parts = {"backbone": {k: v for k, v in backbone.items() if not k.startswith("fc.")}}
    for part, prefix in (
        ("projector", "projector."),
        ("predictor", "predictor."),
        ("heads.rotation", "rotation_projector."),
        ("online_head", "online_head."),
    ):
        if _under(state, prefix):
            parts[part] = _under(state, prefix)
    ignored = sorted(
        {k.split(".")[0] for k in state}
        - {"backbone", "encoder", "projector", "predictor", "rotation_projector", "online_head"}
    )
    return Weights(layout, parts, ignored)


def _official_photonics(obj: dict[str, Any]) -> Weights | None:
    """The official photonics layouts (module docstring), or None when the file has no ``enc.enc_block2d.*``."""
    inner = next((obj[k] for k in ("model_state_dict", "state_dict") if _tensors(obj.get(k))), obj)
    backbone = official_encoder_state(inner) if _tensors(inner) else None
    if backbone is None:
        return None
    state = _strip_module(inner)
    parts = {"backbone": backbone}
    if _under(state, "projector.projector.proj_block."):
        parts["projector"] = _under(state, "projector.projector.proj_block.")
    ignored = sorted({k.split(".")[0] for k in state} - {"encoder", "enc", "projector"})
    return Weights("official-photonics", parts, ignored)


def split_layout(obj: Any, name: str = "the file") -> Weights:
    """Recognise the layout of a loaded checkpoint and return its parts in essl's keys; an :class:`EsslError`
    naming the top-level keys when no layout fits."""
    if not isinstance(obj, dict):
        raise EsslError(f"{name} holds a {type(obj).__name__}, not a dict of weights.")
    if isinstance(obj.get("model"), dict) and "config" in obj:  # an essl run checkpoint
        model = obj["model"]
        parts = {p: _under(model, f"{p}.") for p in ("backbone", "projector", "predictor")}
        heads = sorted({k.split(".")[1] for k in model if k.startswith("heads.")})
        parts.update({f"heads.{h}": _under(model, f"heads.{h}.") for h in heads})
        parts.update(
            {
                p: _under(model, f"{p}.")
                for p in {k.split(".")[0] for k in model} - {"backbone", "projector", "predictor", "heads"}
            }
        )
        return Weights("essl-run", {k: v for k, v in parts.items() if v})
    photonics = _official_photonics(obj)
    if photonics is not None:
        return photonics
    if isinstance(obj.get("backbone"), dict):  # resnet50.pth
        parts = {"backbone": {k: v for k, v in _strip_module(obj["backbone"]).items() if not k.startswith("fc.")}}
        if isinstance(obj.get("projector"), dict):
            parts["projector"] = _strip_module(obj["projector"])
        if isinstance(obj.get("head"), dict):
            parts["online_head"] = _strip_module(obj["head"])
        return Weights("official-resnet50", parts)
    if isinstance(obj.get("model"), dict) and _tensors(obj["model"]):  # checkpoint.pth of the ImageNet scripts
        return _official_model(obj["model"], "official-checkpoint")
    if isinstance(obj.get("state_dict"), dict) and _tensors(obj["state_dict"]):
        state = obj["state_dict"]
        if any(k.startswith("encoder.") for k in state) and any(
            k.startswith(("predictor2.", "projector.net.")) for k in state
        ):
            parts = {"backbone": _under(state, "encoder."), "projector": _under(state, "projector.net.")}
            if _under(state, "predictor2."):
                parts["heads.rotation"] = _under(state, "predictor2.")
            return Weights(
                "official-cifar10",
                {k: v for k, v in parts.items() if v},
                ["net (a second path to encoder and projector)"],
            )
        stripped = _strip_module(state)
        if any(k.startswith(("backbone.", "encoder.")) for k in stripped):
            return _official_model(state, "official-simsiam")
        return _bare(state, "bare")
    if _tensors(obj.get("model_state_dict")):  # the torch tutorials' wrapper (also the official photonics files')
        return _bare(obj["model_state_dict"], "bare")
    if _tensors(obj):
        return _bare(obj, "bare")
    raise EsslError(
        f"{name} has none of the known weight layouts (an essl run checkpoint; the official "
        f"resnet50.pth, checkpoint.pth, SimSiam, CIFAR-10 or photonics checkpoints; a bare backbone state dict). "
        f"Its top-level keys: {', '.join(map(str, list(obj)[:8]))}."
    )


def _bare(state: dict[str, torch.Tensor], layout: str) -> Weights:
    state = _strip_module(state)
    if any(k.startswith("features.") for k in state):  # the photonics encoder: its fc.* layers belong to it
        return Weights(layout, {"backbone": {k: v for k, v in state.items() if k.startswith(("features.", "fc."))}})
    return Weights(layout, {"backbone": {k: v for k, v in state.items() if not k.startswith("fc.")}})


def mismatch(module: nn.Module, state: Any) -> str:
    """How ``state`` differs from ``module``'s state dict (missing and unexpected keys, wrong shapes, entries that
    are not tensors); ``""`` when it fits exactly."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a state dict"
    mine = module.state_dict()
    missing = sorted(set(mine) - set(state))
    extra = sorted(map(str, set(state) - set(mine)))
    common = sorted(set(mine) & set(state))
    other = [f"{k} ({type(state[k]).__name__})" for k in common if not isinstance(state[k], torch.Tensor)]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(mine[k].shape)}"
        for k in common
        if isinstance(state[k], torch.Tensor) and state[k].shape != mine[k].shape
    ]
    return "; ".join(
        filter(
            None,
            [
                f"missing {', '.join(missing[:4])}" if missing else "",
                f"unexpected {', '.join(extra[:4])}" if extra else "",
                f"not a tensor: {', '.join(other[:3])}" if other else "",
                f"shape {', '.join(shapes[:3])}" if shapes else "",
            ],
        )
    )


def load_part(module: nn.Module, state: dict[str, torch.Tensor], what: str, name: str = "the file") -> None:
    """Load ``state`` into ``module`` strictly; a mismatch is an :class:`EsslError` naming keys and shapes."""
    detail = mismatch(module, state)
    if detail:
        raise EsslError(
            f"The {what} in {name} does not fit this model ({detail}). Check the architecture "
            f"(backbone / --arch) and the number of input channels."
        )
    module.load_state_dict(state)


def fits(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` has exactly ``module``'s keys and shapes."""
    return not mismatch(module, state)


def init_from_weights(model: Any, weights: Weights, name: str = "the file") -> dict[str, list[str]]:
    """Initialise an :class:`~essl.training.model.ESSLModel`-shaped ``model`` (``backbone``, ``projector``,
    ``predictor``, ``heads``) from ``weights``: the backbone must fit; every other part is loaded where its keys
    and shapes match and skipped otherwise. Returns ``{"loaded": [...], "skipped": [...]}`` with reasons."""
    load_part(model.backbone, weights.backbone, "backbone", name)
    loaded, skipped = ["backbone"], []
    targets: dict[str, nn.Module | None] = {"projector": model.projector, "predictor": model.predictor}
    targets.update({f"heads.{k}": m for k, m in model.heads.items()})
    for part, state in weights.parts.items():
        if part == "backbone":
            continue
        target = targets.get(part)
        if target is None:
            skipped.append(f"{part} (this model has none)")
        elif fits(target, state):
            target.load_state_dict(state)
            loaded.append(part)
        else:
            skipped.append(f"{part} (keys or shapes differ)")
    return {"loaded": loaded, "skipped": skipped + [f"{g} (no essl counterpart)" for g in weights.ignored]}
