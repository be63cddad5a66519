"""Where a run came from: the content of ``RUN/run.json`` (written through :mod:`essl.runs`).

One *session* is one start of ``essl pretrain`` (or :func:`essl.training.pretrain.pretrain`): the versions of
essl, torch, kornia and Python, essl's git commit when essl runs from a checkout (None when installed from a
wheel), the command line, the host, the resolved device and precision, the number of processes, and the start and
end times with how the session ended. ``run.json`` holds the first session at the top level, the training data and
model it saw (``data``, ``parameters``), and one entry per resume under ``resumes``::

    {"essl": "0.1.0", "torch": "2.5.1", ..., "git_commit": "c3c2622...", "command": "essl pretrain ...",
     "device": "cuda:0", "precision": "bf16", "started": "...", "ended": "...", "status": "finished",
     "data": {"dataset": "mnist5k", "images": 5000, ...}, "resumes": [{"from_epoch": 10, ...}]}
"""

from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kornia
import torch

from essl import __version__

#: the repository root when essl runs from a checkout (its .git sits there)
CHECKOUT = Path(__file__).resolve().parents[2]
ESSL_MAIN = Path(__file__).resolve().parents[1] / "__main__.py"  # python -m essl


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit(root: Path = CHECKOUT) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout essl runs from, or None (installed from a wheel, no git,
    or git fails): never an error."""
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())} if sha else None


def command_line() -> str:
    """The command that started this process, as it would be typed (``essl ...`` for the console script and for
    ``python -m essl``)."""
    argv = list(sys.argv)
    if argv and (Path(argv[0]).name == "essl" or Path(argv[0]).resolve() == ESSL_MAIN):
        argv[0] = "essl"
    return shlex.join(argv)


def session(device: torch.device, precision: str, channels_last: bool, world_size: int) -> dict[str, Any]:
    """The record of this start (its ``ended`` and ``status`` are filled in by :func:`finish`)."""
    git = git_commit()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None
    return {
        "essl": __version__,
        "torch": torch.__version__,
        "kornia": kornia.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "git_commit": git["commit"] if git else None,
        "git_dirty": git["dirty"] if git else None,
        "command": command_line(),
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": device_name,
        "precision": precision,
        "channels_last": channels_last,
        "world_size": world_size,
        "started": now(),
        "ended": None,
        "status": "running",
    }


def start(record: dict[str, Any], this: dict[str, Any], resume_from: tuple[int, int] | None) -> dict[str, Any]:
    """``record`` (the run's ``run.json``; ``{}`` for a new run) with this session added: at the top level for a
    new run, under ``resumes`` (with the epoch and step it continues from) for a resumed one."""
    if resume_from is None:
        return {**this, "resumes": []}
    epoch, step = resume_from
    return {**record, "resumes": [*record.get("resumes", []), {**this, "from_epoch": epoch, "from_step": step}]}


def finish(record: dict[str, Any], status: str) -> dict[str, Any]:
    """``record`` with the current session ended now with ``status`` (finished, interrupted, preempted, failed)."""
    current = record["resumes"][-1] if record.get("resumes") else record
    current.update(ended=now(), status=status)
    return record
