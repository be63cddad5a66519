"""One experiment lifecycle: create, continue, reuse or refuse the run folder of given settings.

``essl demo``, ``essl sweep`` and ``essl phc experiment`` all train their runs through :func:`ensure_run`, so a
rerun of any of them behaves the same way: a finished run with the same settings is reused, an unfinished one is
continued from its last epoch checkpoint, one stopped before its first checkpoint is restarted, and a folder that
holds anything else (another run's settings, foreign files) is refused with an error and left untouched.

"Same settings" is one rule (:func:`setting_differences`): the stored ``config.yaml`` read through the config
class (so settings added to essl since the run compare as their defaults) equals the wanted config in every
setting but :data:`ENGINEERING_KEYS`, which change where and how fast a run is computed, not what it learns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from essl.errors import EsslError
from essl.runs import (
    CONFIG,
    METRICS,
    RUN_JSON,
    TENSORBOARD_DIR,
    WANDB_DIR,
    checkpoint_path,
    foreign_files,
    has_checkpoint,
    has_config,
    hold_lock,
    is_empty_dir,
    load_checkpoint,
    read_config,
    read_marker,
    read_metrics,
    result_path,
    write_marker,
)
from essl.training.checkpoint import checkpoint_config
from essl.training.config import PretrainConfig
from essl.training.pretrain import pretrain

#: Settings that may differ between a stored run and the wanted one without changing the result.
ENGINEERING_KEYS = frozenset(
    {"data_root", "num_threads", "tune_threads", "device", "workers", "notes", "precision", "channels_last", "compile"}
)
#: Files ``essl pretrain`` writes into a run folder before its first checkpoint (safe to clear for a restart;
#: the marker, lock and temporaries of :mod:`essl.runs` count as essl's too).
PRE_CHECKPOINT_FILES = (CONFIG, METRICS, RUN_JSON, f"{TENSORBOARD_DIR}/**", f"{WANDB_DIR}/**")
#: What :func:`run_state` can find, and what :func:`ensure_run` then does.
STATES = {
    "fresh": "trained",
    "restart": "restarted and trained",
    "resume": "resumed and finished",
    "trained": "reused (already trained)",
    "done": "reused (trained and evaluated)",
}


def setting_differences(
    stored: dict[str, Any], wanted: dict[str, Any], names: tuple[str, str] = ("stored", "wanted")
) -> list[str]:
    """``key: stored vs wanted`` for every setting that differs, engineering settings left out."""
    a = {k: v for k, v in stored.items() if k not in ENGINEERING_KEYS}
    b = {k: v for k, v in wanted.items() if k not in ENGINEERING_KEYS}
    return [
        f"{k}: {a.get(k)!r} ({names[0]}) vs {b.get(k)!r} ({names[1]})"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def check_settings(run_dir: Path, cfg: PretrainConfig) -> bool:
    """False for an absent or empty run folder; True for one started with ``cfg``'s settings; otherwise an
    :class:`EsslError` (a folder that is no run, or a run trained with other settings). Reads only its config;
    changes nothing."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or (run_dir.is_dir() and is_empty_dir(run_dir)):
        return False
    if not has_config(run_dir):
        raise EsslError(
            f"{run_dir} already exists and is not an essl run folder (no {CONFIG}); it is left "
            f"untouched. Move it away or choose another output folder."
        )
    try:  # through the config class, so that settings added to essl since the run compare as their defaults
        stored = read_config(run_dir).to_dict()
    except EsslError as exc:
        raise EsslError(
            f"{run_dir / CONFIG} cannot be read as a run config ({exc}); delete {run_dir} to rerun it."
        ) from None
    diff = setting_differences(stored, cfg.to_dict())
    if diff:
        raise EsslError(
            f"{run_dir} was trained with other settings ({'; '.join(diff[:4])}); the folder already "
            f"exists and is left untouched. Rerun with the settings it was started with, choose another "
            f"output folder, or delete {run_dir}."
        )
    return True


def run_state(run_dir: Path, cfg: PretrainConfig, result: str | None = None) -> str:
    """What the run folder of ``cfg`` needs: ``fresh`` (absent or empty), ``restart`` (stopped before its first
    checkpoint), ``resume`` (checkpoint of an unfinished run), ``trained`` (all epochs done) or, when ``result``
    names an evaluation result (``eval/<result>.json``) that exists, ``done``.

    Raises :class:`EsslError` (and changes nothing) if the folder holds something else, or a run with other
    settings.
    """
    run_dir = Path(run_dir)
    if not check_settings(run_dir, cfg):
        return "fresh"
    if result is not None and result_path(run_dir, result).is_file():
        return "done"
    if not has_checkpoint(run_dir):
        extra = foreign_files(run_dir, PRE_CHECKPOINT_FILES)
        if extra:
            raise EsslError(
                f"{run_dir} has no checkpoint but holds {', '.join(sorted(extra))}; it is left "
                f"untouched. Delete the folder to rerun it."
            )
        return "restart"
    ckpt = load_checkpoint(checkpoint_path(run_dir))
    checkpoint_config(ckpt, checkpoint_path(run_dir), resume=True)  # a damaged checkpoint: an error naming it
    read_metrics(run_dir)  # so is a damaged metrics.jsonl, before the run is evaluated or continued
    epoch = ckpt["epoch"]
    return "trained" if epoch >= cfg.epochs else "resume"


def ensure_run(
    cfg: PretrainConfig,
    run_dir: Path,
    *,
    result: str | None = None,
    progress: bool = False,
    preset_name: str = "run",
    log: Callable[[str], Any] | None = None,
) -> str:
    """Bring the run of ``cfg`` in ``run_dir`` to ``trained`` (see :func:`run_state`); returns the state found.

    An existing folder is held (:func:`essl.runs.hold_lock`) from the check to the end of training, so that two
    processes never both restart or resume it; a new one is claimed by :func:`pretrain`. A run folder written
    before essl marked its folders, found to hold this run, is marked (adopted) before a restart replaces it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        state = run_state(run_dir, cfg, result)
        pretrain(cfg, run_dir, progress=progress, preset_name=preset_name, echo=progress)
        return state
    check_settings(run_dir, cfg)  # a foreign folder or another run is refused before the lock is written
    with hold_lock(run_dir, f"run folder {run_dir}"):
        state = run_state(run_dir, cfg, result)
        if state in ("fresh", "restart"):
            if state == "restart" and read_marker(run_dir) is None:
                write_marker(run_dir, "run")
            pretrain(
                cfg, run_dir, overwrite=state == "restart", progress=progress, preset_name=preset_name, echo=progress
            )
        elif state == "resume":
            if log:
                log(f"{run_dir}: continuing from its last checkpoint")
            pretrain(None, run_dir, resume=True, progress=progress, echo=progress)
        elif log:
            log(f"{run_dir}: {STATES[state]}")
    return state
