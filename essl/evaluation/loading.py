"""Load a trained backbone from a run folder (or a checkpoint file) for evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from essl.errors import EsslError
from essl.training.checkpoint import load_checkpoint
from essl.training.config import PretrainConfig, config_from_dict


def load_run_backbone(path: Path | str) -> tuple[nn.Module, PretrainConfig, Path]:
    """``(backbone in eval mode, its config, checkpoint path)`` from a run folder or its ``checkpoint.pt``."""
    from essl.training.model import ESSLModel

    path = Path(path)
    ckpt_path = path / "checkpoint.pt" if path.is_dir() else path
    ckpt = load_checkpoint(ckpt_path)
    if "config" not in ckpt or "model" not in ckpt:
        raise EsslError(f"{ckpt_path} is not an essl pretraining checkpoint (no 'config'/'model').")
    cfg = config_from_dict(ckpt["config"])
    model = ESSLModel(cfg, _channels_from_state(ckpt["model"]))
    model.load_state_dict(ckpt["model"])
    return model.backbone.eval(), cfg, ckpt_path


def _channels_from_state(state: dict[str, torch.Tensor]) -> int:
    for key, value in state.items():  # the first conv weight is the stem: (out, in_channels, k, k)
        if key.startswith("backbone.") and value.ndim == 4:
            return value.shape[1]
    raise EsslError("Cannot infer the number of input channels from the checkpoint.")
