"""User-facing errors.

Every problem caused by user input (a missing dataset, a bad option, a run folder that
already exists) is raised as :class:`EsslError` with a message that says what is wrong and
how to fix it. The command-line tool prints the message without a traceback and exits 2.

Failures of the operating system (disk full, read-only or unwritable folders) are described by
:func:`os_reason` and reported with what is still intact (:func:`write_error`); Ctrl-C is raised
as :class:`Interrupted` with a message true to what was kept, and the CLI exits 130.
"""

from __future__ import annotations

import errno
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator


class EsslError(Exception):
    """An error the user can fix; the message says how."""


class ResultNotSaved(EsslError):
    """A result that was computed but could not be written; ``text`` is its full JSON, which the command line
    prints on standard output so that the result is not lost."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), with a message that says what was kept; the CLI prints it and exits with 130."""


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENOENT: "no such file or folder",
}


def os_failure(exc: BaseException | None) -> OSError | None:
    """The :class:`OSError` that caused ``exc`` (itself, or one in its cause/context chain), or None.

    torch reports a failed write as ``RuntimeError: ... unexpected pos ...`` with the real OSError as context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def os_reason(exc: BaseException) -> str:
    """``"no space left on device"``, ``"permission denied"`` ... for an OS failure (or torch's wrapper of one)."""
    err = os_failure(exc)
    if err is None:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _REASONS.get(err.errno or -1) or (err.strerror or str(err)).lower()


def write_error(
    path: Path | str, exc: BaseException, intact: str = "", then: str = "run the command again"
) -> EsslError:
    """An :class:`EsslError` for a file or folder that could not be written: what happened, what is intact
    (``intact``) and how to go on (``then``)."""
    reason = os_reason(exc)
    fix = {
        "no space left on device": "free some space",
        "disk quota exceeded": "free some space",
        "the file system is read-only": "choose a writable folder",
        "permission denied": "choose a folder you can write to",
        "operation not permitted": "choose a folder you can write to",
    }.get(reason, "fix the cause")
    parts = [f"Cannot write {path}: {reason}.", intact, f"To continue, {fix} and {then}."]
    return EsslError(" ".join(p for p in parts if p))


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) while the block runs, then raise it: a commit (metrics + checkpoint) is never
    cut in the middle. Only in the main thread (where Python delivers signals); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and previous not in (signal.SIG_IGN, None):
        raise KeyboardInterrupt


class MissingSplit(EsslError):
    """A dataset has no such split (e.g. an image folder without ``test/``): callers that can do without it, such
    as the kNN monitor, catch this and nothing else."""


class Preempted(Exception):
    """Training stopped on SIGTERM (e.g. SLURM preemption) after writing a checkpoint; the message says how to
    continue. The command-line tool prints it and exits 143 (128 + SIGTERM)."""
