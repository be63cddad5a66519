"""The bad-input harness: one :class:`Case` per bad input, run through the ``essl`` command line.

A case is a row of a table: the command line (``argv``, relative to a fresh workspace folder that is the current
directory), a ``setup`` that puts the inputs the command needs into the workspace, the words the error message must
contain to name the offending input (``names``) and a pattern that says how to fix it (``fix``). :func:`run_case`
runs the command in-process through :func:`essl.cli.main` (or in a subprocess with ``subprocess=True``, for what
cannot run in-process), hashes every file of the workspace before and after, and :func:`classify` sorts the result
into one outcome:

=============  ========================================================================================
``lost``       a file that was in the workspace before the command was changed or removed
``traceback``  a Python traceback was printed or an exception other than the CLI's own escaped
``silent``     the command exited 0: the bad input was accepted
``wrote``      the command failed but left new files or folders behind (half-written output)
``misleading`` the command failed cleanly, but the message does not name the input or say how to fix it
``clear``      a non-zero exit, a message that names the input and says how to fix it, nothing written
=============  ========================================================================================

Only ``clear`` passes. A case that is known to fail and not fixed yet carries ``open="who fixes it"``; pytest runs it
as a strict xfail, so fixing it makes the suite say so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable

OUTCOMES = ("clear", "misleading", "wrote", "silent", "traceback", "lost")
#: Words of advice: a message that matches says what to do (or what the value must be).
ADVICE = re.compile(
    r"\b(must|expected|expects|expect|choose|use|give|pass|set|remove|delete|lower|raise|at least|"
    r"at most|one of|should|rename|move|regenerate|generate|needs?|lay it out|point|invalid choice|"
    r"required|allowed|only|known|did you mean|lists?)\b",
    re.IGNORECASE,
)
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Case:
    """One bad input. ``argv`` is the command line after ``essl`` (paths relative to the workspace)."""

    id: str
    argv: tuple[str, ...]
    names: tuple[str, ...]  # all must appear in the message (case-insensitive)
    fix: str | None = None  # regex for the advice (default: ADVICE)
    setup: Callable[[Path], None] | None = None  # builds the inputs inside the workspace
    subprocess: bool = False
    open: str | None = None  # known failure, not fixed yet: who fixes it
    timeout: float = 300.0


@dataclass
class Result:
    case: Case
    code: int | None
    output: str  # stdout + stderr
    escaped: str | None = None  # traceback of an exception that left essl.cli.main
    changed: list[str] = field(default_factory=list)  # existing files changed or removed
    created: list[str] = field(default_factory=list)  # new files or folders

    @property
    def outcome(self) -> str:
        return classify(self)

    def explain(self) -> str:
        """One paragraph on what happened (for failure messages and the summary)."""
        lines = [f"{self.case.id}: {self.outcome} (exit {self.code}): essl {' '.join(self.case.argv)}"]
        if self.changed:
            lines.append(f"  changed or removed: {', '.join(self.changed[:5])}")
        if self.created:
            lines.append(f"  created: {', '.join(self.created[:5])}")
        text = (self.escaped or "") + self.output
        lines += ["  | " + line for line in text.strip().splitlines()[-8:]]
        return "\n".join(lines)


def message_ok(case: Case, output: str) -> bool:
    low = output.lower()
    if not all(name.lower() in low for name in case.names):
        return False
    return re.search(case.fix, output, re.IGNORECASE) is not None if case.fix else ADVICE.search(output) is not None


def classify(r: Result) -> str:
    if r.changed:
        return "lost"
    if r.escaped or TRACEBACK in r.output:
        return "traceback"
    if r.code == 0:
        return "silent"
    if r.created:
        return "wrote"
    if not message_ok(r.case, r.output):
        return "misleading"
    return "clear"


def snapshot(root: Path) -> dict[str, str]:
    """Relative path → sha256 of every file (``"dir"`` for folders) under ``root``."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file():
            out[rel] = "dir" if path.is_dir() else "other"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _run_inprocess(argv: list[str]) -> tuple[int | None, str, str | None]:
    import torch

    from essl.cli import main

    threads = torch.get_num_threads()
    buf, escaped, code = io.StringIO(), None, None
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, int) and exc.code is not None:
                    print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 -- anything else that leaves main() is a traceback for the user
        if isinstance(sys.exc_info()[1], KeyboardInterrupt):
            raise
        escaped, code = traceback.format_exc(), 1
    finally:
        torch.set_num_threads(threads)
    return code, buf.getvalue(), escaped


def _run_subprocess(argv: list[str], timeout: float) -> tuple[int | None, str, str | None]:
    repo = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "essl", *argv], capture_output=True, text=True, env=env, timeout=timeout
    )
    return proc.returncode, proc.stdout + proc.stderr, None


def run_case(case: Case, workspace: Path) -> Result:
    """Build the case's inputs in ``workspace`` (created if needed), run it there and compare the file trees."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    old_cwd = os.getcwd()
    os.chdir(workspace)
    try:
        if case.setup is not None:
            case.setup(workspace)
        before = snapshot(workspace)
        argv = list(case.argv)
        code, output, escaped = _run_subprocess(argv, case.timeout) if case.subprocess else _run_inprocess(argv)
        after = snapshot(workspace)
    finally:
        os.chdir(old_cwd)
    changed = [p for p, h in before.items() if after.get(p) != h]
    created = [p for p in after if p not in before]
    return Result(case, code, output, escaped, changed, created)


def check(case: Case, workspace: Path) -> Result:
    """Run ``case`` and assert that it ends with a clear error (the pytest entry point)."""
    r = run_case(case, workspace)
    assert r.outcome == "clear", r.explain()
    return r


def with_open(cases: list[Case], reasons: dict[str, str]) -> list[Case]:
    """Mark the cases named in ``reasons`` (id → who fixes it) as known open failures."""
    unknown = set(reasons) - {c.id for c in cases}
    assert not unknown, f"open reasons for unknown cases {unknown}"
    return [replace(c, open=reasons[c.id]) if c.id in reasons else c for c in cases]


def params(cases: list[Case]) -> list:
    """pytest parameters: one per case, a strict xfail where the case is marked open."""
    import pytest

    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate case ids {dup}"
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.open)] if c.open else []) for c in cases
    ]


# ------------------------------------------------------------------------------------ shared inputs (cached)
_CACHE: dict[str, Path] = {}
_CACHE_ROOT: list[Path] = []


def _cache_dir() -> Path:
    if not _CACHE_ROOT:
        import atexit

        _CACHE_ROOT.append(Path(tempfile.mkdtemp(prefix="essl-bad-inputs-")))
        atexit.register(shutil.rmtree, _CACHE_ROOT[0], True)
    return _CACHE_ROOT[0]


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once per process by ``build(path)`` (inputs that are slow to make, e.g. a pretrained run)."""
    if name not in _CACHE:
        path = _cache_dir() / name
        build(path)
        _CACHE[name] = path
    return _CACHE[name]


def _build_folder(path: Path) -> None:
    from image_folders import make_image_folder

    make_image_folder(path, per_class={"train": 16, "test": 6})


def image_folder() -> Path:
    """A tiny labelled image folder (``train/`` and ``test/``, two classes c0, c1, 16-px RGB)."""
    return cached("folder", _build_folder)


TINY_RUN = {
    "dataset": "folder",
    "image_size": 16,
    "backbone": "small_cnn",
    "projector": "small",
    "method": "simclr",
    "views": ["crop_only", "crop_only"],
    "batch_size": 16,
    "epochs": 1,
    "lr": 0.05,
    "knn_every": 0,
    "num_threads": 1,
    "precision": "fp32",
    "channels_last": "false",
    "seed": 0,
    "workers": 0,
}


def _build_run(path: Path) -> None:
    from essl.training.config import config_from_dict
    from essl.training.pretrain import pretrain

    data = image_folder()
    cfg = config_from_dict({**TINY_RUN, "data_root": str(data)})
    with contextlib.redirect_stderr(io.StringIO()):
        pretrain(cfg, path, progress=False)


def tiny_run() -> Path:
    """A 1-epoch small-CNN SimCLR run on :func:`image_folder` (its config names the cached folder)."""
    return cached("run", _build_run)


# --------------------------------------------------------------------------------------- setup helpers
def copy_in(source: Callable[[], Path], name: str) -> Callable[[Path], None]:
    """Setup: copy a cached input into the workspace as ``name``."""

    def setup(ws: Path) -> None:
        src = source()
        if src.is_dir():
            shutil.copytree(src, ws / name)
        else:
            shutil.copy2(src, ws / name)

    return setup


def write_file(name: str, text: str | bytes) -> Callable[[Path], None]:
    """Setup: a file with the given contents."""

    def setup(ws: Path) -> None:
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    """Setup: several setups in order."""

    def setup(ws: Path) -> None:
        for s in setups:
            s(ws)

    return setup
