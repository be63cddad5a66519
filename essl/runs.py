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

Ownership. Every folder essl creates carries a marker, ``.essl-run`` (JSON: kind, essl version, creation
time), and ``--overwrite`` replaces only a marked folder of the same kind whose every file is one essl writes
there (:data:`RUN_FILES`, :func:`experiment_files`), never the working directory or one of its parents, the home
folder, the file system root, or a folder that is, holds or lies in one of the command's inputs (a data root,
an ``init_from`` run); anything else is refused with nothing touched (:func:`check_replaceable`). A folder
written by essl before the marker existed is refused too: delete it yourself if it is yours to replace.

One process at a time. A run folder (and an evaluation result, a sweep shard, a demo) is held by one process
through a lock file created with ``O_CREAT | O_EXCL`` (:func:`hold_lock`): pid, host and start time of the
holder. A second process is refused with the holder named; a lock left by a process of this host that no longer
runs is taken over (with a note); a lock of another host is never guessed stale.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
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
WANDB_DIR = "wandb"  # logger=wandb: the folder W&B creates in the run folder
#: Summary files of an experiment folder (demo, sweep).
RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
#: The ownership marker of every folder essl creates (JSON: kind, essl version, created).
MARKER = ".essl-run"
#: The lock file of a folder held by one process (JSON: pid, host, started, command).
LOCK = ".essl-lock"
#: What essl writes into a run folder (patterns relative to it; ``*`` matches within one name): the files
#: ``--overwrite`` may delete. ``report/`` is the default folder of ``essl report RUN``.
RUN_FILES = (
    CONFIG,
    METRICS,
    CHECKPOINT,
    CHANGES,
    RUN_JSON,
    f"{MILESTONE_DIR}/epoch_*.pt",
    f"{EVAL_DIR}/*.json",
    f"{EVAL_DIR}/cache/*",
    "report/*",
    f"{TENSORBOARD_DIR}/**",
    f"{WANDB_DIR}/**",
)
#: Names of the temporaries of atomic writes and of bookkeeping files, in any folder essl writes.
_BOOKKEEPING = (MARKER, f"{LOCK}*", ".*.tmp-*", ".*.partial", ".*.part[0-9]*")


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


def experiment_files(*own: str) -> tuple[str, ...]:
    """The patterns of an experiment folder (demo, sweep, phc experiment): ``results.md``, ``results.json``, the
    command's ``own`` files, and run folders one level down (:data:`RUN_FILES`)."""
    return (RESULTS_MD, RESULTS_JSON, *own, *(f"*/{p}" for p in RUN_FILES))


def _known(rel: tuple[str, ...], patterns: Iterable[str]) -> bool:
    if any(fnmatch.fnmatchcase(rel[-1], b) for b in _BOOKKEEPING):
        return True
    for pattern in patterns:
        parts = pattern.split("/")
        if parts[-1] == "**":  # anything below a folder
            head = parts[:-1]
            if len(rel) > len(head) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(rel, head)):
                return True
            continue
        if len(parts) == len(rel) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(rel, parts)):
            return True
    return False


def foreign_files(folder: Path | str, patterns: Iterable[str], limit: int = 5) -> list[str]:
    """Up to ``limit`` paths (relative to ``folder``) of files, links or other entries that essl does not write
    there (``patterns``, plus the marker, locks and temporaries); empty folders do not count."""
    folder, patterns, found = Path(folder), tuple(patterns), []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder).parts
        for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(root, d))):
            if not _known((*base, name), patterns) or os.path.islink(os.path.join(root, name)):
                found.append("/".join((*base, name)))
                if len(found) >= limit:
                    return found
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
    return found


def is_empty_dir(folder: Path | str) -> bool:
    """True for a folder holding nothing but essl's bookkeeping (the marker, a lock, temporaries) and empty
    folders."""
    return not foreign_files(folder, ())


def read_marker(folder: Path | str) -> dict[str, Any] | None:
    """The ownership marker of ``folder`` (``{"kind", "essl_version", "created"}``), or None when unmarked."""
    path = Path(folder) / MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(folder: Path | str, kind: str) -> None:
    """Mark ``folder`` as essl's ``kind`` folder (``run``, ``demo``, ``sweep``, ``phc-experiment``); an existing
    marker is kept."""
    if not (Path(folder) / MARKER).is_file():
        marker = {"kind": kind, "essl_version": __version__, "created": datetime.now(timezone.utc).isoformat()}
        write_atomic(Path(folder) / MARKER, json.dumps(marker) + "\n")


def _named(paths: list[str], limit: int = 4) -> str:
    return ", ".join(paths[:limit]) + (" and more" if len(paths) > limit else "")


def _protected(folder: Path, inputs: Mapping[str, Path | str | None] | None) -> str | None:
    """Why ``folder`` must never be replaced, or None."""
    real, cwd, home = folder.resolve(), Path.cwd().resolve(), Path.home().resolve()
    if real == cwd:
        return "the working directory"
    if real in cwd.parents:
        return "a parent of the working directory"
    if real == home or real in home.parents:
        return "your home folder" if real == home else "a parent of your home folder"
    if real == Path(real.anchor):
        return "the file system root"
    for label, item in (inputs or {}).items():
        if not item:
            continue
        given = Path(str(item)).expanduser()
        path = given.resolve()
        if path == real:
            return f"the {label} of this command ({given})"
        if real in path.parents:
            return f"a folder that holds the {label} of this command ({given})"
        if path in real.parents:
            return f"inside the {label} of this command ({given})"
    return None


def check_replaceable(
    folder: Path | str, kind: str, patterns: Iterable[str], inputs: Mapping[str, Path | str | None] | None = None
) -> None:
    """Refuse (with an :class:`EsslError`, changing nothing) to replace ``folder`` unless essl owns it: it carries
    the marker of ``kind`` and holds only files essl writes there (``patterns``), it is not the working directory,
    one of its parents, the home folder or the root, and it is not, holds or lies in one of ``inputs`` (the
    command's ``{"data_root": path, "init_from": path}`` ...)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EsslError(
            f"{folder} exists and is not a folder; --overwrite replaces only folders. Choose another --out."
        )
    if not folder.is_dir():
        return
    why = _protected(folder, inputs)
    if why is not None:
        raise EsslError(
            f"--overwrite will not replace {folder}: it is {why}. Nothing was touched. Choose another --out "
            f"(a new folder, e.g. runs/NAME)."
        )
    foreign = foreign_files(folder, patterns)
    if foreign:
        raise EsslError(
            f"--overwrite will not replace {folder}: it holds {_named(foreign)}, which essl does not write "
            f"there. Nothing was touched. Choose another --out, or move those files away (or delete the folder "
            f"yourself if it is yours to delete)."
        )
    marker = read_marker(folder)
    if marker is None and not is_empty_dir(folder):
        raise EsslError(
            f"--overwrite will not replace {folder}: it has no {MARKER} marker (it was written by an essl "
            f"older than {__version__}, or not by essl). Nothing was touched. If it is yours to replace, delete "
            f"it yourself (rm -r {folder}); otherwise choose another --out."
        )
    if marker is not None and marker.get("kind") != kind:
        raise EsslError(
            f"--overwrite will not replace {folder}: it is an essl {marker.get('kind')} folder, not a {kind} "
            f"folder. Nothing was touched. Choose another --out."
        )


def check_writable(folder: Path | str, kind: str, patterns: Iterable[str], signature: Iterable[str] = ()) -> None:
    """Refuse (changing nothing) to write essl's ``kind`` files into an existing ``folder`` that holds anything
    else (e.g. ``essl sweep --out`` a folder of the user's), that another kind of essl folder owns, or that is
    unmarked and holds neither a run folder nor one of the ``signature`` files (e.g. ``sweep.json``), so that a
    user's ``results.md`` is never taken for essl's. An unmarked folder of an older essl (its files only) is
    continued, and marked by :func:`prepare_folder`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EsslError(f"{folder} exists and is not a folder. Choose another --out.")
    if not folder.is_dir():
        return
    foreign = foreign_files(folder, patterns)
    if foreign:
        raise EsslError(
            f"{folder} already exists and holds {_named(foreign)}, which are not files of an essl {kind}; it is "
            f"left untouched. Choose another --out (a new or empty folder)."
        )
    marker = read_marker(folder)
    if marker is not None and marker.get("kind") != kind:
        raise EsslError(
            f"{folder} is an essl {marker.get('kind')} folder, not a {kind} folder; it is left untouched. "
            f"Choose another --out."
        )
    older = any((folder / name).is_file() for name in signature) or any(  # an essl before the markers
        (p / CONFIG).is_file() for p in folder.iterdir() if p.is_dir()
    )
    if marker is None and not older and not is_empty_dir(folder):
        raise EsslError(
            f"{folder} already exists and holds {_named(foreign_files(folder, ()))}, but it is not an essl {kind} "
            f"folder (no {MARKER} marker, no run folders); it is left untouched. Choose another --out (a new or "
            f"empty folder)."
        )


def check_run_dir(out: Path, overwrite: bool, inputs: Mapping[str, Path | str | None] | None = None) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder unless ``overwrite`` and essl may replace it
    (:func:`check_replaceable`); changes nothing on disk."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EsslError(f"{out} exists and is not a folder. Choose another --out.")
    if out.is_dir():
        check_lock(out, f"run folder {out}")
    if out.is_dir() and not is_empty_dir(out):
        if not overwrite:
            hint = (
                " It holds a checkpoint: continue it with `essl pretrain --resume " + str(out) + "`."
                if (out / CHECKPOINT).exists()
                else ""
            )
            raise EsslError(
                f"Run folder {out} already exists and is not empty.{hint} Choose another --out, or pass "
                f"--overwrite to replace it (only a run folder essl wrote is replaced)."
            )
        check_replaceable(out, "run", RUN_FILES, inputs)


def _clear(folder: Path) -> None:
    """Delete everything in ``folder`` but its lock files (the caller checked that essl owns it all)."""
    for entry in folder.iterdir():
        if entry.name.startswith(LOCK):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def prepare_folder(
    out: Path | str,
    kind: str,
    patterns: Iterable[str],
    *,
    overwrite: bool = False,
    inputs: Mapping[str, Path | str | None] | None = None,
    keep: bool = False,
    signature: Iterable[str] = (),
) -> Path:
    """Create ``out`` (when missing) and mark it as essl's ``kind`` folder. An existing non-empty folder is kept
    when ``keep`` (after :func:`check_writable`), replaced when ``overwrite`` (after :func:`check_replaceable`),
    and refused otherwise. Call it while holding the folder's lock (:func:`claim_folder`) so the check and the
    replacement see the same folder."""
    out = Path(out)
    if out.is_dir() and not is_empty_dir(out):
        if keep:
            check_writable(out, kind, patterns, signature)
        elif overwrite:
            check_replaceable(out, kind, patterns, inputs)
            _clear(out)
        elif kind == "run":
            check_run_dir(out, False)
        else:
            raise EsslError(f"{out} already exists and is not empty. Choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, kind)
    return out


def prepare_run_dir(out: Path, overwrite: bool, inputs: Mapping[str, Path | str | None] | None = None) -> None:
    """Create a fresh, marked run folder; an existing non-empty folder is an error unless ``overwrite`` and essl
    may replace it (:func:`check_replaceable`; then its contents are replaced)."""
    check_run_dir(out, overwrite, inputs)
    prepare_folder(out, "run", RUN_FILES, overwrite=overwrite, inputs=inputs)


@contextlib.contextmanager
def claim_folder(
    out: Path | str,
    kind: str,
    patterns: Iterable[str],
    *,
    overwrite: bool = False,
    inputs: Mapping[str, Path | str | None] | None = None,
    keep: bool = False,
    what: str | None = None,
    lock: str | None = LOCK,
    signature: Iterable[str] = (),
) -> Iterator[Path]:
    """Hold ``out`` for this process (:func:`hold_lock`, creating the folder when missing), then check and
    prepare it under the lock (:func:`prepare_folder`); the lock is released on leaving, also on an error or
    Ctrl-C. ``lock`` names the lock file (a sweep shard holds its own, so shards share the folder; None holds
    none). A folder this call created is removed again when the claim fails before anything was written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EsslError(f"{out} exists and is not a folder. Choose another --out.")
    created = [p for p in (out, *out.parents) if not p.exists()]  # the folders this call creates
    out.mkdir(parents=True, exist_ok=True)
    try:
        with hold_lock(out, what or f"{kind} folder {out}", lock or LOCK, enabled=lock is not None):
            prepare_folder(out, kind, patterns, overwrite=overwrite, inputs=inputs, keep=keep, signature=signature)
            yield out
    except BaseException:
        for folder in created:  # innermost first; only while it holds nothing but this call's marker
            if folder.is_dir() and is_empty_dir(folder):
                with contextlib.suppress(OSError):
                    (folder / MARKER).unlink(missing_ok=True)
                    folder.rmdir()
        raise


# ------------------------------------------------------------------------------------------------ locks
def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _holder_alive(pid: int, start: str | None) -> bool:
    """Process ``pid`` runs and is the one that started at ``start`` (not another one reusing the pid)."""
    if not _alive(pid):
        return False
    now = _process_start(pid)
    return start is None or now is None or now == start


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _holder_text(holder: dict[str, Any]) -> str:
    command = f": {holder['command']}" if holder.get("command") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}{command}"


def _stale(path: Path, holder: dict[str, Any] | None) -> bool:
    """A lock of a process of this host that no longer runs (or an unreadable lock over a minute old)."""
    if holder is None:
        try:
            age = datetime.now().timestamp() - path.stat().st_mtime
        except OSError:
            return False
        return age > 60
    if holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return True
    return not _holder_alive(pid, holder.get("proc_start"))


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "proc_start": _process_start(os.getpid()),
        "command": " ".join(["essl", *sys.argv[1:]])[:300],
    }


def _mine(holder: dict[str, Any] | None, me: dict[str, Any]) -> bool:
    return holder is not None and all(holder.get(k) == me[k] for k in ("pid", "host", "proc_start"))


def _busy(path: Path, holder: dict[str, Any] | None, what: str) -> EsslError:
    """The error for a lock held by another process: who holds it, and what to do."""
    if holder is None:
        return EsslError(
            f"{what} is locked by another process ({path} is being written). Wait a moment and try again; if "
            f"no essl process uses it, delete {path}."
        )
    if holder.get("host") != socket.gethostname():
        advice = f"It runs on another machine; if you are sure it no longer does, delete {path}."
    else:
        advice = "Wait for it to finish (or stop it), or choose another output."
    return EsslError(f"{what} is in use by another essl process ({_holder_text(holder)}). {advice}")


def check_lock(folder: Path | str, what: str, name: str = LOCK) -> None:
    """Refuse (changing nothing) when another live process holds ``folder/name``: the early check of a command,
    before it loads data; the lock itself is taken later (:func:`hold_lock`)."""
    path = Path(folder) / name
    if path.exists():
        holder = _read_lock(path)
        if not _mine(holder, _me()) and not _stale(path, holder):
            raise _busy(path, holder, what)


def acquire_lock(folder: Path | str, what: str, name: str = LOCK) -> dict[str, Any] | None:
    """Create ``folder/name`` exclusively (``O_CREAT | O_EXCL``) with this process's pid, host and start time; a
    stale lock (:func:`_stale`) is taken over with a note on stderr. Raises :class:`EsslError` naming the holder
    when another process holds it. Returns what was written, or None when this process holds the lock already."""
    path = Path(folder) / name
    me = _me()
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if _mine(holder, me):
                return None  # this process holds it already (a nested hold, e.g. essl sweep around pretrain)
            if not _stale(path, holder):
                raise _busy(path, holder, what) from None
            aside = path.with_name(f"{name}.stale-{os.getpid()}")  # take it over: move the judged lock aside
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue
            if _read_lock(aside) != holder:  # another process replaced it in between: put its lock back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                aside.unlink()
                continue
            aside.unlink()
            print(
                f"essl: note: took over the lock of {what}, left by a process that no longer runs"
                + (f" ({_holder_text(holder)})" if holder else "")
                + ".",
                file=sys.stderr,
            )
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(me) + "\n")
        return me
    raise EsslError(f"Could not take the lock {path} of {what} (other processes keep changing it). Try again.")


def release_lock(folder: Path | str, mine: dict[str, Any], name: str = LOCK) -> None:
    """Remove ``folder/name`` if this process still holds it."""
    path = Path(folder) / name
    if _read_lock(path) == mine:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold_lock(folder: Path | str, what: str, name: str = LOCK, enabled: bool = True) -> Iterator[None]:
    """Hold the lock ``folder/name`` (an existing folder) for the ``with`` block; released on leaving it, also on
    an error or Ctrl-C. ``enabled=False`` (ranks other than 0 of a torchrun) holds nothing."""
    if not enabled:
        yield
        return
    mine = acquire_lock(folder, what, name)
    try:
        yield
    finally:
        if mine is not None:
            release_lock(folder, mine, name)


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


def is_result_file(path: Path | str) -> bool:
    """True for a result file :func:`write_result` wrote (what ``--overwrite`` may replace)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "essl_version" in record and "written" in record


@contextlib.contextmanager
def hold_result(run_dir: Path | str, name: str, what: str, enabled: bool = True) -> Iterator[None]:
    """Hold the result ``RUN_DIR/eval/<name>.json`` for this process while it is computed and written (a lock
    ``eval/.essl-lock.<name>``, see :func:`acquire_lock`); an ``eval/`` folder created here and left empty is
    removed again. Where the folder cannot be written (read-only, a file in the way) no lock is taken: the
    result is computed, and printed when it cannot be saved (:func:`write_result`)."""
    folder = Path(run_dir) / EVAL_DIR
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    mine = None
    if enabled:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            mine = acquire_lock(folder, what, f"{LOCK}.{name}")
        except OSError:
            mine = None
    try:
        yield
    finally:
        if mine is not None:
            release_lock(folder, mine, f"{LOCK}.{name}")
        for path in created:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def read_result(run_dir: Path | str, name: str) -> dict[str, Any] | None:
    """One result of a run folder, or None when it has not been written."""
    path = result_path(run_dir, name)
    return read_json(path) if path.is_file() else None


def read_results(run_dir: Path | str) -> dict[str, dict[str, Any]]:
    """All results of a run folder, keyed by file stem."""
    out_dir = Path(run_dir) / EVAL_DIR
    return {p.stem: read_json(p) for p in sorted(out_dir.glob("*.json"))} if out_dir.is_dir() else {}
