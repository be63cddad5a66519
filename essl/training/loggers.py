"""Experiment loggers: ``logger=tensorboard`` and ``logger=wandb`` (each an optional extra), one interface.

The training loop calls :meth:`Logger.log` with scalars at a global step: every ``log_every`` steps the means over
the steps since the last call (``train/loss``, every loss term, ``train/pred_acc/<group>``, ``train/lr``,
``train/images_per_s``, ``train/online_probe_top1``), and after each epoch every number of its ``metrics.jsonl``
line under ``epoch/``. Only the first process logs (under torchrun every process computes the same means).

- ``tensorboard``: event files in ``RUN/tensorboard/`` (``pip install 'essl[tensorboard]'``; view them with
  ``tensorboard --logdir RUN``). A resumed run drops the events past its checkpoint (``purge_step``).
- ``wandb``: a W&B run in ``RUN/wandb/`` (``pip install 'essl[wandb]'``), offline unless W&B is configured
  (``WANDB_MODE``, ``WANDB_API_KEY`` or ``wandb login``); ``wandb sync RUN/wandb/offline-run-*`` uploads an
  offline run later. The project is ``$WANDB_PROJECT`` (default ``essl``); a resumed run continues the same W&B
  run.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from essl.catalog import LOGGERS
from essl.errors import EsslError
from essl.extras import require_extra
from essl.runs import TENSORBOARD_DIR


class Logger:
    """Where scalars go; this base class drops them (``logger=none``)."""

    def log(self, scalars: Mapping[str, float | None], step: int) -> None:
        """Record ``scalars`` (None and non-finite values are skipped) at global step ``step``."""

    def close(self) -> None:
        """Flush and release the files."""


def finite(scalars: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``scalars`` (booleans, None, text and NaN left out)."""
    return {
        k: float(v)
        for k, v in scalars.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class TensorBoardLogger(Logger):
    def __init__(self, run_dir: Path, purge_step: int | None = None):
        require_extra("tensorboard")
        writer_cls = importlib.import_module("torch.utils.tensorboard").SummaryWriter
        self.writer = writer_cls(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step)

    def log(self, scalars: Mapping[str, float | None], step: int) -> None:
        for key, value in finite(scalars).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def wandb_mode() -> str:
    """``$WANDB_MODE`` when set; ``online`` when an API key is configured (``$WANDB_API_KEY`` or the
    ``api.wandb.ai`` entry ``wandb login`` writes to ``~/.netrc``); ``offline`` otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "online" if "api.wandb.ai" in netrc.read_text() else "offline"
    except OSError:
        return "offline"


class WandbLogger(Logger):
    def __init__(self, run_dir: Path, config: dict[str, Any], run_id: str):
        (wandb,) = require_extra("wandb")
        mode = wandb_mode()
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "essl"),
                name=Path(run_dir).name,
                dir=str(run_dir),
                config=config,
                mode=mode,
                id=run_id,
                resume="allow",
            )
        except Exception as exc:  # wandb raises its own types (no network, bad key, bad settings)
            raise EsslError(
                f"logger=wandb: W&B did not start in {mode} mode ({type(exc).__name__}: {exc}). Log offline with "
                f"WANDB_MODE=offline (upload later with `wandb sync`), or check `wandb login`."
            ) from None

    def log(self, scalars: Mapping[str, float | None], step: int) -> None:
        self.run.log(finite(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


def check_logger(kind: str) -> None:
    """Fail early (before the run folder is touched) on an unknown logger or one whose extra is not installed."""
    if kind not in LOGGERS:
        raise EsslError(f"logger must be one of {', '.join(LOGGERS)}; got {kind!r}.")
    if kind != "none":
        require_extra(kind)


def make_logger(kind: str, run_dir: Path, config: dict[str, Any], started: str, start_step: int = 0) -> Logger:
    """The logger of ``logger=kind`` for the run in ``run_dir``; ``started`` (the run's first start, from
    ``run.json``) names its W&B run, so that a resumed run continues it; ``start_step`` is the global step it
    continues from."""
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir, purge_step=start_step + 1 if start_step else None)  # drop steps redone
    if kind == "wandb":
        run_id = hashlib.sha1(f"{Path(run_dir).resolve()} {started}".encode()).hexdigest()[:16]
        return WandbLogger(run_dir, config, run_id)
    return Logger()
