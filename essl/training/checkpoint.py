"""The random-number state a checkpoint carries, so that a resumed run continues exactly (torch CPU and CUDA).

A checkpoint holds everything needed to resume exactly: model, optimizer and grad-scaler states, the epoch and
step reached, the config, and this RNG state. The file itself is written and read by
:func:`essl.runs.save_checkpoint` / :func:`essl.runs.load_checkpoint` (atomically; weights-only unpickling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from essl.errors import EsslError
from essl.models.layouts import mismatch
from essl.training.config import PretrainConfig, config_from_dict


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------- structure checks
#: entries every essl pretraining checkpoint holds (all an evaluation reads), and what ``--resume`` needs besides
ENTRIES = ("model", "config")
RESUME_ENTRIES = ("optimizer", "epoch", "rng")


def damaged(path: Path | str, what: str) -> EsslError:
    """The error for a checkpoint whose structure is wrong: the file, the entry, and how to go on."""
    return EsslError(
        f"Checkpoint {path} is damaged: {what}. Use an intact copy: a kept milestone (RUN/checkpoints/"
        f"epoch_NNNN.pt; evaluate it with --checkpoint epoch_NNNN, or copy it over checkpoint.pt to resume from "
        f"it), or start the run again."
    )


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _rng_ok(state: Any) -> bool:
    torch_state = state.get("torch") if isinstance(state, dict) else None
    return isinstance(torch_state, torch.Tensor) and torch_state.dtype == torch.uint8 and torch_state.ndim == 1


def checkpoint_config(ckpt: Any, path: Path | str, resume: bool = False) -> PretrainConfig:
    """Check a loaded essl pretraining checkpoint entry by entry and return its config.

    Every use needs ``model`` (a state dict of tensors) and ``config`` (valid settings); an ``epoch`` must be a
    whole number from 0 to the config's epochs, and ``step``/``steps_per_epoch`` must agree with it. ``resume``
    also requires ``optimizer`` (``state`` and ``param_groups``), ``epoch`` and ``rng`` (and the running sums of a
    mid-epoch checkpoint). The model's keys and shapes are checked against the model built from the config by
    :func:`check_model_state`, the optimizer's against the optimizer by :func:`check_optimizer_state`."""
    if not isinstance(ckpt, dict) or not any(k in ckpt for k in ENTRIES):
        hint = (
            " It looks like a released backbone file: pass it with --backbone-file PATH --dataset ... instead."
            if isinstance(ckpt, dict) and ("backbone" in ckpt or "state_dict" in ckpt)
            else ""
        )
        raise EsslError(f"{path} is not an essl pretraining checkpoint (no 'config'/'model').{hint}")
    missing = [k for k in ENTRIES + (RESUME_ENTRIES if resume else ()) if k not in ckpt]
    if missing:
        raise damaged(path, f"it has no {', '.join(repr(k) for k in missing)} entry")
    model = ckpt["model"]
    if not isinstance(model, dict) or not model:
        raise damaged(path, f"its 'model' entry is a {type(model).__name__}, not a state dict")
    if not isinstance(ckpt["config"], dict):
        raise damaged(path, f"its 'config' entry is a {type(ckpt['config']).__name__}, not a mapping of settings")
    try:
        cfg = config_from_dict(ckpt["config"])
    except EsslError as exc:
        raise damaged(path, f"its 'config' entry is not valid ({exc})") from None
    epoch = ckpt.get("epoch", 0)
    if not _whole(epoch) or not 0 <= epoch <= cfg.epochs:
        raise damaged(path, f"its 'epoch' entry is {epoch!r}, not a whole number from 0 to {cfg.epochs} (epochs)")
    if "steps_per_epoch" in ckpt or "step" in ckpt:
        steps, step = ckpt.get("steps_per_epoch"), ckpt.get("step")
        if not _whole(steps) or steps < 1:
            raise damaged(path, f"its 'steps_per_epoch' entry is {steps!r}, not a whole number >= 1")
        if not _whole(step) or step < 0 or step // steps != epoch:
            raise damaged(
                path, f"its 'step' entry is {step!r}, which does not fall in epoch {epoch + 1} ({steps} steps each)"
            )
    if not resume:
        return cfg
    optimizer = ckpt["optimizer"]
    if (
        not isinstance(optimizer, dict)
        or not isinstance(optimizer.get("state"), dict)
        or not isinstance(optimizer.get("param_groups"), list)
    ):
        raise damaged(path, "its 'optimizer' entry is not an optimizer state (no 'state' and 'param_groups')")
    ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
    if not isinstance(ranks, list) or not all(_rng_ok(r) for r in [ckpt["rng"], *ranks]):
        raise damaged(path, "its 'rng' entry is not a random-number state (a dict with a byte tensor 'torch')")
    if "scaler" in ckpt and not isinstance(ckpt["scaler"], dict):
        raise damaged(path, f"its 'scaler' entry is a {type(ckpt['scaler']).__name__}, not a grad-scaler state")
    if ckpt.get("step", 0) % ckpt.get("steps_per_epoch", 1):  # mid-epoch: the epoch's running sums
        parts = ckpt.get("partial_ranks") or []
        if not isinstance(parts, list) or not all(
            _sums_ok(p, ckpt.get("partial")) for p in [ckpt.get("partial"), *parts]
        ):
            raise damaged(
                path, "it stops mid-epoch but its 'partial' entry (the epoch's running sums) is missing or malformed"
            )
    return cfg


def _sums_ok(partial: Any, first: Any) -> bool:
    """A mid-epoch checkpoint's running sums: the same metric names as ``first`` (rank 0's), each a tensor."""
    return (
        isinstance(partial, dict)
        and isinstance(partial.get("sums"), dict)
        and isinstance(first, dict)
        and isinstance(first.get("sums"), dict)
        and partial["sums"].keys() == first["sums"].keys()
        and all(isinstance(v, torch.Tensor) for v in partial["sums"].values())
        and isinstance(partial.get("seen"), (int, float))
        and isinstance(partial.get("elapsed"), (int, float))
    )


def check_model_state(model: nn.Module, state: dict[str, Any], path: Path | str) -> None:
    """The checkpoint's ``model`` entry must have exactly the keys and shapes of the model its config builds."""
    detail = mismatch(model, state)
    if detail:
        raise damaged(path, f"its 'model' entry does not match the model its own config builds ({detail})")


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path | str) -> None:
    """The checkpoint's ``optimizer`` entry must have the optimizer's parameter groups (each with as many
    parameters) and, per parameter, buffers of that parameter's shape."""
    groups = state["param_groups"]
    mine = [len(g["params"]) for g in optimizer.param_groups]
    theirs = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list) else None for g in groups]
    if mine != theirs:
        raise damaged(
            path, f"its 'optimizer' entry has parameter groups of sizes {theirs}, the model's optimizer {mine}"
        )
    params = dict(
        zip((i for g in groups for i in g["params"]), (p for g in optimizer.param_groups for p in g["params"]))
    )
    for index, buffers in state["state"].items():
        param = params.get(index)
        if param is None or not isinstance(buffers, dict):
            raise damaged(path, f"its 'optimizer' entry holds a state for parameter {index!r}, which no group lists")
        for name, value in buffers.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != param.shape:
                raise damaged(
                    path,
                    f"its 'optimizer' entry has a {name} of shape {tuple(value.shape)} for a parameter of shape "
                    f"{tuple(param.shape)}",
                )
