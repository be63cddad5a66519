"""Bad inputs that would replace what is not essl's, or share an output with another process: ``--overwrite`` of
the working directory, a data root or a folder holding other files (pretrain, demo, sweep, export, phc
experiment), and run folders locked by another process."""

import json
import shutil
import socket
from pathlib import Path

import pytest

from .harness import Case, both, check, copy_in, image_folder, params, tiny_run, write_file
from .test_bad_photonics import phc_files

CHEAP = ("epochs=1", "subset=64", "batch_size=32", "knn_every=0", "num_threads=1", "precision=fp32", "warmup_epochs=0")
RUN = copy_in(tiny_run, "run")
NOTES = write_file("notes.txt", "my notes\n")
FOLDER_SETTINGS = ("dataset=folder", "image_size=16", "views=crop_only,crop_only", "batch_size=8", "subset=0")


def pre(*argv: str) -> tuple[str, ...]:
    return ("pretrain", "mnist5k-simclr", *CHEAP, *argv, "--no-progress")


def data_in(name: str):
    """Setup: the tiny image folder at ``name``."""

    def setup(ws: Path) -> None:
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(image_folder(), ws / name)

    return setup


def unmarked(name: str):
    """Setup: remove the ownership marker of the run folder ``name`` (as written by an older essl)."""

    def setup(ws: Path) -> None:
        (ws / name / ".essl-run").unlink(missing_ok=True)

    return setup


def lock(name: str, pid: int, host: str | None = None):
    """Setup: a lock of process ``pid`` (1: alive on every host) in the folder ``name`` (or the lock file
    ``name`` when it names one, e.g. ``run/eval/.essl-lock.knn``)."""

    def setup(ws: Path) -> None:
        info = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-12-01T09:00:00+00:00"}
        path = ws / name if Path(name).name.startswith(".essl-lock") else ws / name / ".essl-lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info))

    return setup


CASES = [
    # --overwrite of what is not essl's
    Case(
        "overwrite-working-directory",
        pre("--out", ".", "--overwrite"),
        ("working directory",),
        fix="choose another --out",
        setup=both(NOTES, RUN),
    ),
    Case(
        "overwrite-parent-of-working-directory",
        pre("--out", "..", "--overwrite"),
        ("parent of the working directory",),
        fix="choose another --out",
        setup=NOTES,
    ),
    Case(
        "overwrite-data-root",
        pre(*FOLDER_SETTINGS, "data_root=data", "--out", "data", "--overwrite"),
        ("data_root", "data"),
        fix="choose another --out",
        setup=data_in("data"),
    ),
    Case(
        "overwrite-folder-holding-data-root",
        pre(*FOLDER_SETTINGS, "data_root=d/data", "--out", "d", "--overwrite"),
        ("holds the data_root", "d/data"),
        fix="choose another --out",
        setup=data_in("d/data"),
    ),
    Case(
        "overwrite-init-from-run",
        ("pretrain", "run/config.yaml", "init_from=run", "--out", "run", "--overwrite", "--no-progress"),
        ("init_from", "run"),
        fix="choose another --out",
        setup=RUN,
    ),
    Case(
        "overwrite-run-with-other-files",
        pre("--out", "run", "--overwrite"),
        ("run", "notes.txt"),
        fix="choose another --out|move those files",
        setup=both(RUN, write_file("run/notes.txt", "mine\n")),
    ),
    Case(
        "overwrite-folder-of-user-files",
        pre("--out", "mine", "--overwrite"),
        ("mine", "a.txt"),
        setup=both(write_file("mine/a.txt", "a\n"), write_file("mine/sub/b.csv", "1,2\n")),
    ),
    Case(
        "overwrite-unmarked-old-run",
        pre("--out", "run", "--overwrite"),
        (".essl-run", "rm -r run"),
        setup=both(RUN, unmarked("run")),
    ),
    Case(
        "demo-overwrite-folder-with-other-files",
        ("demo", "--epochs", "1", "--subset", "256", "--out", "d", "--overwrite", "--no-progress"),
        ("d", "notes.txt"),
        setup=write_file("d/notes.txt", "mine\n"),
    ),
    Case(
        "demo-overwrite-working-directory",
        ("demo", "--epochs", "1", "--subset", "256", "--out", ".", "--overwrite", "--no-progress"),
        ("working directory",),
        setup=NOTES,
    ),
    Case(
        "sweep-into-folder-with-a-results-file",
        ("sweep", "--out", "s", "--transforms", "hflip", "--seeds", "1", *CHEAP, "--no-progress"),
        ("s", "results.md"),
        setup=write_file("s/results.md", "# my results\n"),
    ),
    Case(
        "export-overwrite-foreign-file",
        ("export", "run", "model.pt", "--overwrite"),
        ("model.pt", "essl export"),
        setup=both(RUN, write_file("model.pt", b"my own weights")),
    ),
    Case(
        "phc-experiment-into-data-root",
        ("phc", "experiment", "--family", "gpm", "--data-root", "phc", "--out", "phc", "--pretrain-epochs", "2"),
        ("phc", ".h5"),
        setup=phc_files(),
    ),
    # one process at a time
    Case(
        "resume-run-held-by-another-process",
        ("pretrain", "--resume", "run", "epochs=2", "--no-progress"),
        ("in use by another essl process", "pid 1 "),
        fix="wait for it to finish",
        setup=both(RUN, lock("run", 1)),
    ),
    Case(
        "overwrite-run-held-by-another-process",
        pre("--out", "run", "--overwrite"),
        ("in use by another essl process", "pid 1 "),
        fix="wait for it to finish",
        setup=both(RUN, lock("run", 1)),
    ),
    Case(
        "resume-run-locked-on-another-host",
        ("pretrain", "--resume", "run", "epochs=2", "--no-progress"),
        ("elsewhere.example", "run/.essl-lock"),
        fix="delete",
        setup=both(RUN, lock("run", 4242, host="elsewhere.example")),
    ),
    Case(
        "knn-result-held-by-another-process",
        ("knn", "run"),
        ("in use by another essl process", "pid 1 ", "essl knn"),
        fix="wait for it to finish",
        setup=both(RUN, lock("run/eval/.essl-lock.knn", 1)),
    ),
    Case(
        "demo-held-by-another-process",
        ("demo", "--epochs", "1", "--subset", "256", "--out", "d", "--no-progress"),
        ("in use by another essl process", "pid 1 "),
        setup=both(write_file("d/.essl-run", '{"kind": "demo"}'), lock("d", 1)),
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, tmp_path):
    check(case, tmp_path)
