"""Checkpoints: written atomically (temporary file + ``os.replace``) and read with ``weights_only=True``.

A checkpoint holds everything needed to resume exactly: model, optimizer and grad-scaler states, the epoch and
step reached, the config, and the RNG state (torch CPU and CUDA).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from essl.errors import EsslError


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` so that a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights-only unpickling (no code from the file is run)."""
    path = Path(path)
    if not path.is_file():
        raise EsslError(f"No checkpoint at {path}. Pass a run folder written by `essl pretrain` (it holds "
                        f"checkpoint.pt) or the path of a .pt file.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise EsslError(f"Cannot read checkpoint {path} ({type(exc).__name__}: {detail}). The file is corrupt, "
                        f"truncated, or holds objects that weights-only loading refuses.") from None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
