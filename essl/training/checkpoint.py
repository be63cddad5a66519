"""The random-number state a checkpoint carries, so that a resumed run continues exactly (torch CPU and CUDA).

A checkpoint holds everything needed to resume exactly: model, optimizer and grad-scaler states, the epoch and
step reached, the config, and this RNG state. The file itself is written and read by
:func:`essl.runs.save_checkpoint` / :func:`essl.runs.load_checkpoint` (atomically; weights-only unpickling).
"""

from __future__ import annotations

from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
