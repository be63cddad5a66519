"""Take a trained backbone out of essl, and load one back: ``essl export RUN OUT`` and :func:`load_backbone`.

An export is two files side by side:

- the weights, ``OUT.safetensors`` (default) or ``OUT.pt`` (a plain ``torch.save`` state dict): the backbone's
  own ``state_dict``, whose keys are torchvision's for the ResNets (``conv1.weight``, ``layer1.0.bn1.running_mean``
  ..., no ``fc.*``), so ``torchvision.models.resnet50().load_state_dict(w, strict=False)`` takes them;
- ``OUT.json``: what is needed to use them (architecture, input channels and size, feature dimension, the
  normalisation the backbone was trained with), and where they came from (essl version, the run's config, the
  checkpoint's SHA-256 and epoch, the run's evaluation results of that checkpoint).

:func:`load_backbone` reads an export, a run folder (or one of its checkpoints) or a released checkpoint of the
official E-SSL ImageNet scripts, and returns the backbone in eval mode with that metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from essl import __version__
from essl.augmentation import resolve_view
from essl.data import load_dataset
from essl.data.image_folder import IMAGENET_MEAN, IMAGENET_STD
from essl.data.imagenet import STREAMED_DATASETS
from essl.errors import EsslError
from essl.evaluation.loading import file_digest, load_run
from essl.models.layouts import split_layout
from essl.models import feature_dim, make_backbone
from essl.runs import MILESTONE_DIR, RUN_JSON, load_checkpoint, load_safetensors, read_results
from essl.training.config import PretrainConfig

FORMAT, FORMAT_VERSION = "essl-backbone", 1
WEIGHT_FORMATS = {".safetensors": "safetensors", ".pt": "pt"}
TORCHVISION_ARCHS = ("resnet18_cifar", "resnet18", "resnet50")


def metadata_path(weights: Path | str) -> Path:
    """``OUT.safetensors`` / ``OUT.pt`` -> ``OUT.json``."""
    return Path(weights).with_suffix(".json")


def weights_path(out: Path | str, fmt: str | None = None) -> tuple[Path, str]:
    """The weights file for ``out`` and its format: the suffix decides (``.safetensors``/``.pt``), ``fmt`` adds
    one to a name without it; a name without a suffix and without ``fmt`` becomes ``OUT.safetensors``."""
    out = Path(out)
    if fmt is not None and fmt not in WEIGHT_FORMATS.values():
        raise EsslError(f"--format must be safetensors or pt, got {fmt!r}.")
    if out.suffix in WEIGHT_FORMATS:
        if fmt is not None and WEIGHT_FORMATS[out.suffix] != fmt:
            raise EsslError(f"{out} ends in {out.suffix} but --format {fmt} was asked for; use one of them.")
        return out, WEIGHT_FORMATS[out.suffix]
    if out.suffix in (".json", ".pth", ".bin", ".ckpt"):
        raise EsslError(f"Name the export OUT.safetensors or OUT.pt (or OUT without a suffix), not {out.name}.")
    fmt = fmt or "safetensors"
    return out.with_name(f"{out.name}.{fmt}"), fmt


# ------------------------------------------------------------------------------------------------ metadata
def data_description(cfg: PretrainConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Channels, image size and normalisation of the run's training data: from ``run.json`` when the run recorded
    them, else by reading the training split's header (nothing is decoded for streamed ImageNet)."""
    recorded = _recorded_data(run_dir)
    if recorded:
        return recorded
    if cfg.dataset in STREAMED_DATASETS:  # the normalisation of essl.data.imagenet.ImageFolderBatches
        if cfg.channels == 1:
            return {"channels": 1, "image_size": cfg.image_size, "mean": [0.5], "std": [0.5]}
        return {"channels": 3, "image_size": cfg.image_size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    data = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.image_size, cfg.channels)
    return {"channels": data.channels, "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std)}


def _recorded_data(run_dir: Path | None) -> dict[str, Any] | None:
    path = run_dir / RUN_JSON if run_dir else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text()).get("data") or {}
    except (OSError, ValueError):
        return None
    keys = ("channels", "image_size", "mean", "std")
    return {k: data[k] for k in keys} if all(k in data for k in keys) else None


def run_metadata(
    backbone: nn.Module, cfg: PretrainConfig, ckpt_path: Path, meta: dict[str, Any], run_dir: Path
) -> dict[str, Any]:
    """The metadata of a run's backbone (the ``OUT.json`` of its export, without the ``weights`` entry)."""
    data = data_description(cfg, run_dir)
    view = resolve_view(cfg.views[0])
    sha = file_digest(ckpt_path)
    evaluations = {
        name: r for name, r in read_results(run_dir).items() if (r.get("checkpoint_info") or {}).get("sha256") == sha
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "essl_version": __version__,
        "architecture": cfg.backbone,
        "keys": "torchvision" if cfg.backbone in TORCHVISION_ARCHS else "essl",
        "in_channels": data["channels"],
        "input_size": view.size or data["image_size"],  # the crop size the backbone was trained on
        "data_image_size": data["image_size"],
        "feature_dim": feature_dim(backbone),
        "normalization": {"mean": data["mean"], "std": data["std"], "scale": "inputs in [0, 1], then (x - mean) / std"},
        "method": cfg.method,
        "equivariance": [{"group": t.group, "weight": t.weight} for t in cfg.equivariance],
        "dataset": cfg.dataset,
        "checkpoint": {
            "path": str(ckpt_path),
            "sha256": sha,
            "epoch": meta.get("epoch"),
            "milestone": meta.get("milestone"),
        },
        "evaluations": evaluations,
        "config": cfg.to_dict(),
    }


# ------------------------------------------------------------------------------------------------ export
def export_backbone(
    run: Path | str,
    out: Path | str,
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    checkpoint: str | None = None,
) -> tuple[Path, Path]:
    """Write the backbone of ``run`` (a run folder, or a checkpoint file of one) to ``OUT.safetensors`` (or
    ``.pt``) and ``OUT.json``; returns both paths. ``checkpoint`` picks a kept milestone (``epoch_0100`` or
    ``100``; :func:`essl.runs.resolve_checkpoint`) instead of the last checkpoint. Nothing is written unless
    both can be; an existing file is replaced only with ``overwrite``."""
    weights, fmt = weights_path(out, fmt)
    meta_file = metadata_path(weights)
    for path in (weights, meta_file):
        if path.exists() and not overwrite:
            raise EsslError(f"{path} already exists. Choose another OUT, or pass --overwrite to replace it.")
        if path.exists() and not path.is_file():
            raise EsslError(f"{path} exists and is not a file. Choose another OUT.")
    if weights.parent.exists() and not weights.parent.is_dir():
        raise EsslError(f"{weights.parent} is a file, not a folder. Choose another OUT.")
    if overwrite and (weights.exists() or meta_file.exists()) and not _is_export_of(meta_file, weights):
        raise EsslError(
            f"--overwrite will not replace {weights if weights.exists() else meta_file}: it is not an earlier "
            f"`essl export` ({meta_file.name} beside it does not describe {weights.name}). Nothing was touched. "
            f"Choose another OUT, or move the file away yourself."
        )
    if not weights.parent.is_dir():
        raise EsslError(f"The folder {weights.parent} does not exist. Create it first, or choose another OUT.")
    run = Path(run)
    backbone, cfg, ckpt_path, info = load_run(run, checkpoint)
    metadata = run_metadata(backbone, cfg, ckpt_path, info, run_folder(run, ckpt_path))
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}

    tmp_weights = weights.with_name(f".{weights.name}.tmp-{os.getpid()}")
    tmp_meta = meta_file.with_name(f".{meta_file.name}.tmp-{os.getpid()}")
    try:
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(
                state, str(tmp_weights), metadata={"format": "pt", "essl_format": FORMAT, "architecture": cfg.backbone}
            )
        else:
            torch.save(state, tmp_weights)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_weights, 0o666 & ~umask)  # safetensors creates its file private; the export is shared as usual
        metadata["weights"] = {
            "file": weights.name,
            "format": fmt,
            "sha256": file_digest(tmp_weights),
            "tensors": len(state),
            "parameters": sum(p.numel() for p in backbone.parameters()),
        }
        tmp_meta.write_text(json.dumps(metadata, indent=2) + "\n")
        os.replace(tmp_weights, weights)
        os.replace(tmp_meta, meta_file)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return weights, meta_file


# ------------------------------------------------------------------------------------------------ load
def load_backbone(path: Path | str, *, arch: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """``(backbone in eval mode, metadata)`` from any of:

    - an export (``OUT.safetensors`` or ``OUT.pt`` with its ``OUT.json``);
    - a run folder written by ``essl pretrain`` or its checkpoint file;
    - a released checkpoint of the official E-SSL ImageNet scripts or a bare torchvision ResNet state dict
      (``arch`` is inferred from the weights unless given).

    The backbone maps normalised images ``(N, C, H, W)`` to features ``(N, feature_dim)``; ``metadata`` says
    which normalisation and input size it was trained with (when known).
    """
    path = Path(path)
    if not path.exists():
        raise EsslError(
            f"{path} does not exist. Pass a run folder, an export (OUT.safetensors / OUT.pt with "
            f"OUT.json) or a released checkpoint file."
        )
    if path.is_dir():
        return _load_from_run(path)
    if path.suffix == ".safetensors" or metadata_path(path).is_file() and _is_export_metadata(metadata_path(path)):
        return _load_export(path)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and "config" in ckpt and "model" in ckpt:
        return _load_from_run(path)
    return _load_released(path, ckpt, arch)


def run_folder(run: Path, ckpt_path: Path) -> Path:
    """The run folder of ``run`` (a run folder, its checkpoint.pt, or a milestone in its checkpoints/)."""
    if run.is_dir():
        return run
    return ckpt_path.parent.parent if ckpt_path.parent.name == MILESTONE_DIR else ckpt_path.parent


def _load_from_run(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    backbone, cfg, ckpt_path, info = load_run(path)
    run_dir = run_folder(path, ckpt_path)
    try:
        metadata = run_metadata(backbone, cfg, ckpt_path, info, run_dir)
    except EsslError:  # the training data moved: the weights still load, without data-dependent fields
        metadata = {
            "format": FORMAT,
            "architecture": cfg.backbone,
            "feature_dim": feature_dim(backbone),
            "config": cfg.to_dict(),
            "checkpoint": {"path": str(ckpt_path), "epoch": info.get("epoch")},
        }
    metadata["source"] = "run"
    return backbone.eval(), metadata


def _is_export_of(meta_file: Path, weights: Path) -> bool:
    """True when ``meta_file`` is the metadata ``essl export`` wrote for ``weights`` (what --overwrite may
    replace)."""
    try:
        meta = json.loads(meta_file.read_text())
        return meta.get("format") == FORMAT and meta["weights"]["file"] == weights.name
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False


def _is_export_metadata(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _load_export(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    meta_file = metadata_path(path)
    if not meta_file.is_file():
        raise EsslError(
            f"{path} has no {meta_file.name} beside it; an essl export is the weights file plus its "
            f"metadata (write both with `essl export RUN {path}`)."
        )
    try:
        metadata = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise EsslError(f"Cannot read {meta_file}: {exc}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise EsslError(f'{meta_file} is not the metadata of an essl export (no "format": "{FORMAT}").')
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise EsslError(
            f"{meta_file} was written by a newer essl (format version {metadata['format_version']}); "
            f"upgrade essl to load it."
        )
    for key in ("architecture", "in_channels"):
        if key not in metadata:
            raise EsslError(f"{meta_file} lacks {key!r}; re-export the run with `essl export`.")
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        state = load_checkpoint(path)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise EsslError(f"{path} is not a plain state dict of tensors.")
    backbone = make_backbone(metadata["architecture"], int(metadata["in_channels"]))
    _load_strict(backbone, state, path, metadata["architecture"])
    metadata["source"] = "export"
    return backbone.eval(), metadata


def _load_strict(backbone: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).splitlines()[:2])
        raise EsslError(f"The weights in {path} do not fit a {arch} backbone: {first}") from None


def infer_arch(state: dict[str, torch.Tensor]) -> str:
    """Which torchvision-layout ResNet a state dict is: Bottleneck blocks (``layer1.0.conv3``) make a ResNet-50,
    a 3×3 stem the CIFAR ResNet-18, a 7×7 stem the ImageNet ResNet-18."""
    stem = state.get("conv1.weight")
    if not isinstance(stem, torch.Tensor) or stem.ndim != 4:
        raise EsslError("No 'conv1.weight' among the weights: this is not a torchvision-layout ResNet.")
    if "layer1.0.conv3.weight" in state:
        return "resnet50"
    return "resnet18_cifar" if stem.shape[-1] == 3 else "resnet18"


def _load_released(path: Path, ckpt: Any, arch: str | None) -> tuple[nn.Module, dict[str, Any]]:
    weights = split_layout(ckpt, str(path))  # every official layout (essl.models.layouts)
    state, layout = weights.backbone, weights.layout
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    arch = arch or infer_arch(state)
    backbone = make_backbone(arch, in_channels=state["conv1.weight"].shape[1])
    _load_strict(backbone, state, path, arch)
    metadata = {
        "format": FORMAT,
        "source": "released",
        "layout": layout,
        "architecture": arch,
        "keys": "torchvision",
        "in_channels": int(state["conv1.weight"].shape[1]),
        "feature_dim": feature_dim(backbone),
        "checkpoint": {"path": str(path), "sha256": file_digest(path)},
    }
    return backbone.eval(), metadata
