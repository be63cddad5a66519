"""The run-folder format: what ``essl pretrain`` and the evaluations write, and how it is read back.

A run folder holds::

    config.yaml       the run's settings (:class:`~essl.training.config.PretrainConfig`), written before training
    metrics.jsonl     one JSON line per finished epoch (loss parts, lr, throughput, kNN monitor)
    checkpoint.pt     the last checkpoint (end of an epoch, or a step with checkpoint_every): model, optimiser,
                      scaler, RNG, config (weights-only readable)
    checkpoints/      kept milestones, epoch_0100.pt ... (keep_checkpoints, keep_every)
    changes.jsonl     settings changed when the run was resumed (essl pretrain --resume RUN key=value)
    run.json          provenance: versions, git commit, command, device, precision, data, start/end, each resume
    tensorboard/      event files of logger=tensorboard; wandb/ the W&B run files of logger=wandb
    eval/<name>.json  one machine-readable result per evaluation (protocol, checkpoint, numbers)

Experiment folders (``essl demo``, ``essl sweep``, ``essl phc experiment``) hold run folders plus their own
``results.md`` / ``results.json``. Every file is written with :func:`write_atomic`: a crash leaves the old file
or the new one, never half of one. This module is the only place that spells these file names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from essl import __version__
from essl.errors import EsslError, ResultNotSaved, write_error
from essl.training.config import PretrainConfig, config_from_dict

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
EVAL_DIR = "eval"
RUN_JSON = "run.json"  # provenance of a run (versions, command, device, start/end); read by essl export
MILESTONE_DIR = "checkpoints"
CHANGES = "changes.jsonl"
TENSORBOARD_DIR = "tensorboard"  # logger=tensorboard
#: Summary files of an experiment folder (demo, sweep).
RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"


# ------------------------------------------------------------------------------------------------ writing
def write_atomic(path: Path | str, data: str | bytes | Callable[[IO[bytes]], Any], fsync: bool = False) -> Path:
    """Write ``data`` (text, bytes, or a function that writes into a binary file) to ``path`` through a
    per-process temporary file and ``os.replace``, so readers (and other processes writing the same folder) see
    the old file or the new one, never a partial one. ``fsync`` also flushes the data to the disk first."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as fh:
            if isinstance(data, str):
                fh.write(data.encode())
            elif isinstance(data, bytes):
                fh.write(data)
            else:
                data(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _temporary(path: Path) -> Path:
    """The per-process temporary file next to ``path`` that :func:`write_atomic` writes before renaming it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_temporaries(folder: Path | str) -> list[Path]:
    """Remove the temporary files that writes killed midway (kill -9, power loss) left in ``folder`` and its
    ``checkpoints/``: those of :func:`write_atomic` whose process is gone. Returns what was removed."""
    removed = []
    for sub in (Path(folder), Path(folder) / MILESTONE_DIR):
        for tmp in sorted(sub.glob(".*.tmp-*")) if sub.is_dir() else []:
            pid = tmp.name.rpartition(".tmp-")[2]
            if pid.isdigit() and not _alive(int(pid)) and tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # a number no pid can be
        return False
    return True


def create_file(path: Path | str, text: str) -> bool:
    """Write ``path`` only if it does not exist yet, atomically (a complete file or none, also when several
    processes try at once); False if it existed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    try:
        os.link(tmp, path)  # fails if another process (or an earlier run) created it
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def write_files(folder: Path | str, files: Mapping[str, str | bytes]) -> list[Path]:
    """Write every ``{name: text or bytes}`` into ``folder`` (created when missing), each with :func:`write_atomic`;
    the tables, JSON files and plots of ``essl report``, ``essl demo``, ``essl sweep`` and ``essl phc experiment``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_atomic(folder / name, data) for name, data in files.items()]


# ------------------------------------------------------------------------------------------------ the folder
def default_run_dir(preset: str) -> Path:
    """``runs/<preset>-<date>-<time>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(preset).stem}-{stamp}"


def check_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder unless ``overwrite``; changes nothing on disk."""
    if out.exists() and not out.is_dir():
        raise EsslError(f"{out} exists and is not a folder. Choose another --out.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            hint = (
                " It holds a checkpoint: continue it with `essl pretrain --resume " + str(out) + "`."
                if (out / CHECKPOINT).exists()
                else ""
            )
            raise EsslError(
                f"Run folder {out} already exists and is not empty.{hint} Choose another --out, or pass "
                f"--overwrite to replace it."
            )


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """Create a fresh run folder; an existing non-empty folder is an error unless ``overwrite`` (then replaced)."""
    check_run_dir(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------------------ config
def write_config(run_dir: Path, cfg: PretrainConfig) -> Path:
    return write_atomic(Path(run_dir) / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def has_config(run_dir: Path | str) -> bool:
    return (Path(run_dir) / CONFIG).is_file()


def read_config(run_dir: Path | str) -> PretrainConfig:
    """The :class:`PretrainConfig` of a run folder (settings added to essl since the run take their defaults)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise EsslError(f"{run_dir} is not an essl run folder (no {CONFIG}). Pass a folder written by `essl pretrain`.")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EsslError(f"{path} is not valid YAML ({exc}).") from None
    return config_from_dict(values or {})


# ------------------------------------------------------------------------------------------------ metrics
def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Write every epoch's row (the file is replaced as a whole, so a resumed run drops rows past its checkpoint)."""
    return write_atomic(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: Path | str) -> list[dict[str, Any]]:
    """The per-epoch rows of a run folder (``[]`` when it has none yet)."""
    path = Path(run_dir) / METRICS
    rows = read_json_lines(path)
    for number, row in enumerate(rows, start=1):
        epoch = row.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise EsslError(
                f"{path}: row {number} has epoch {epoch!r}, not a whole number >= 1. The file was damaged or edited "
                f"by hand; repair or delete that row."
            )
    return rows


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one a line (``[]`` when it does not exist); a line that is not a JSON
    object is an :class:`EsslError` naming the file and the line."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            row, why = None, f"not valid JSON ({exc.msg}, column {exc.colno})"
        else:
            why = f"a JSON {type(row).__name__}, not an object"
        if not isinstance(row, dict):
            raise EsslError(
                f"{path}, line {number}, is {why}: {_clip(line)}. The file was damaged or edited by hand; "
                f'delete or repair that line (every line is one JSON object such as {{"epoch": 1, ...}}).'
            )
        rows.append(row)
    return rows


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else (invalid JSON, a list, unreadable bytes) is an
    :class:`EsslError` naming the file."""
    text = _read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EsslError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). The file was damaged "
            f"or edited by hand: repair it, or delete it and run the command that wrote it again."
        ) from None
    if not isinstance(value, dict):
        raise EsslError(
            f"{path} holds a JSON {type(value).__name__}, not an object. Repair it, or delete it and run the "
            f"command that wrote it again."
        )
    return value


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EsslError(
            f"{path} is not a text file (byte {exc.start} is not UTF-8). The file was damaged: delete it, or "
            f"replace it with a good copy."
        ) from None


def _clip(text: str, n: int = 60) -> str:
    text = text.strip()
    return repr(text if len(text) <= n else text[:n] + "...")


# ------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_path(path: Path | str) -> Path:
    """The checkpoint of a run folder, or ``path`` itself when it names a file."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def has_checkpoint(run_dir: Path | str) -> bool:
    return (Path(run_dir) / CHECKPOINT).is_file()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` so that a crash leaves either the old file or the new one, never half of one."""
    write_atomic(path, lambda fh: torch.save(state, fh), fsync=True)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights-only unpickling (no code from the file is run)."""
    path = Path(path)
    if not path.is_file():
        raise EsslError(
            f"No checkpoint at {path}. Pass a run folder written by `essl pretrain` (it holds "
            f"{CHECKPOINT}) or the path of a .pt file."
        )
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the message below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise EsslError(_unreadable(path, exc)) from None


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(1)


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in essl's words: the refused global by name, or
    what was wrong with the file, without torch's advice (which would have the user run the file's code)."""
    text = str(exc)
    refused = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
    if refused:
        return (
            f"Cannot read checkpoint {path}: it holds a pickled object of type `{refused.group(1)}`. essl reads "
            f"checkpoints weights-only (tensors, numbers, strings, lists and dicts) so that no code stored in a "
            f"file ever runs, and such an object could run code. Save the weights as a plain state dict of "
            f"tensors (torch.save(model.state_dict(), PATH), or `essl export`) and pass that file."
        )
    operand = re.search(r"Unsupported operand (\d+)", text)
    if operand and _first_byte(path) == b"\x80":  # pickle's PROTO opcode: a pickle, not torch's zip format
        return (
            f"Cannot read checkpoint {path}: it is a raw pickle (instruction {operand.group(1)} is outside what "
            f"weights-only reading accepts), not a file written by torch.save. essl never runs code stored in a "
            f"file; save the weights with torch.save(model.state_dict(), PATH) and pass that file."
        )
    if isinstance(exc, PermissionError):
        return f"Cannot read checkpoint {path}: permission denied. Make the file readable (chmod u+r) and retry."
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    first = lines[0].split(". ")[0].rstrip(".")[:160] if lines else ""  # torch's first sentence: what failed
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return (
        f"Cannot read checkpoint {path} ({detail}): the file is corrupt, truncated or not a PyTorch checkpoint. "
        f"Use another copy (a kept milestone in {MILESTONE_DIR}/, or the file it came from)."
    )


def load_safetensors(path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (an ``essl export``) on the CPU."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EsslError(f"Cannot read {path} as safetensors ({exc}); the file is corrupt or truncated.") from None


# ------------------------------------------------------------------------------------------------ milestones
def milestone_name(epoch: int) -> str:
    """``epoch_0100`` for epoch 100: the name ``--checkpoint`` takes."""
    return f"epoch_{epoch:04d}"


def milestone_path(run_dir: Path | str, epoch_or_name: int | str) -> Path:
    name = milestone_name(epoch_or_name) if isinstance(epoch_or_name, int) else epoch_or_name
    return Path(run_dir) / MILESTONE_DIR / f"{name}.pt"


def keep_milestone(run_dir: Path | str, epoch: int) -> Path:
    """Keep the run's current checkpoint as ``RUN/checkpoints/epoch_NNNN.pt`` (a hard link where the file system
    allows, else a copy; both atomic): the rolling checkpoint is replaced later, the milestone stays."""
    src, dst = Path(run_dir) / CHECKPOINT, milestone_path(run_dir, epoch)
    dst.parent.mkdir(exist_ok=True)
    tmp = _temporary(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


def list_milestones(run_dir: Path | str) -> list[str]:
    """Names of the kept checkpoints of a run, oldest first."""
    folder = Path(run_dir) / MILESTONE_DIR
    return sorted(p.stem for p in folder.glob("epoch_*.pt")) if folder.is_dir() else []


def resolve_checkpoint(run_dir: Path | str, choice: str | None = None) -> Path:
    """The checkpoint file for ``--checkpoint``: None → the rolling checkpoint of ``run_dir`` (or ``run_dir`` when
    it names a file); a milestone name (``epoch_0100``, or ``100``) → ``RUN/checkpoints/epoch_0100.pt``;
    otherwise a path."""
    run_dir = Path(run_dir)
    if choice is None or choice in ("", "last", "checkpoint"):
        return checkpoint_path(run_dir)
    run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    if choice.isdigit():
        choice = milestone_name(int(choice))
    if choice.startswith("epoch_") and "/" not in choice and not choice.endswith(".pt"):
        path = milestone_path(run_dir, choice)
        if not path.is_file():
            kept = list_milestones(run_dir)
            have = f"kept: {', '.join(kept)}" if kept else "the run kept none (set keep_checkpoints or keep_every)"
            raise EsslError(f"No checkpoint {choice} in {run_dir / MILESTONE_DIR} ({have}).")
        return path
    path = Path(choice)
    if not path.is_file():
        raise EsslError(
            f"--checkpoint {choice}: no such file. Give a milestone name such as epoch_0100 or the path of a .pt file."
        )
    return path


# ------------------------------------------------------------------------------------- changes made on resume
def append_change(run_dir: Path | str, entry: dict[str, Any]) -> Path:
    """Append one resume's changes (a JSON line) to ``changes.jsonl``."""
    path = Path(run_dir) / CHANGES
    previous = path.read_text() if path.is_file() else ""
    return write_atomic(path, previous + json.dumps(entry) + "\n")


def read_changes(run_dir: Path | str) -> list[dict[str, Any]]:
    return read_json_lines(Path(run_dir) / CHANGES)


# ------------------------------------------------------------------------------------------------ provenance
def write_run_record(run_dir: Path | str, record: dict[str, Any]) -> Path:
    """Write ``RUN/run.json`` (:mod:`essl.training.provenance` says what it holds) atomically."""
    return write_atomic(Path(run_dir) / RUN_JSON, json.dumps(record, indent=2, default=str) + "\n")


def read_run_record(run_dir: Path | str) -> dict[str, Any]:
    """``RUN/run.json``, or ``{}`` for a run written before essl recorded it (or with an unreadable one)."""
    path = Path(run_dir) / RUN_JSON
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


# ------------------------------------------------------------------------------------------------ results
def result_path(run_dir: Path | str, name: str) -> Path:
    """``RUN_DIR/eval/<name>.json``."""
    return Path(run_dir) / EVAL_DIR / f"{name}.json"


def write_result(run_dir: Path | str, name: str, payload: dict[str, Any]) -> Path:
    """Write ``RUN_DIR/eval/<name>.json`` atomically (with the essl version and the time) and return its path.

    A result that cannot be written (read-only folder, disk full, permission denied) is not lost: the
    :class:`~essl.errors.ResultNotSaved` raised carries its full JSON, which the command line prints."""
    path = result_path(run_dir, name)
    record = {
        "essl_version": __version__,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **payload,
    }
    text = json.dumps(record, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, text)
    except OSError as exc:
        why = write_error(
            path,
            exc,
            "The result was computed but could not be saved; its full JSON is printed on standard output.",
            "run the evaluation again (or save the printed JSON yourself)",
        )
        raise ResultNotSaved(str(why), text) from None


def read_result(run_dir: Path | str, name: str) -> dict[str, Any] | None:
    """One result of a run folder, or None when it has not been written."""
    path = result_path(run_dir, name)
    return read_json(path) if path.is_file() else None


def read_results(run_dir: Path | str) -> dict[str, dict[str, Any]]:
    """All results of a run folder, keyed by file stem."""
    out_dir = Path(run_dir) / EVAL_DIR
    return {p.stem: read_json(p) for p in sorted(out_dir.glob("*.json"))} if out_dir.is_dir() else {}
