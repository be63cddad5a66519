"""Run-folder ownership and locks (essl/runs.py): ``--overwrite`` replaces only what essl wrote, and one process
at a time owns a run folder."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from essl.cli import main
from essl.errors import EsslError
from essl.runs import (
    LOCK,
    MARKER,
    RUN_FILES,
    acquire_lock,
    check_replaceable,
    hold_lock,
    load_checkpoint,
    prepare_run_dir,
    read_marker,
    read_metrics,
)
from essl.training.config import load_config
from essl.training.pretrain import Pretrainer, pretrain

REPO = Path(__file__).resolve().parents[1]
CHEAP = ["epochs=1", "subset=64", "batch_size=32", "knn_every=0", "num_threads=1", "precision=fp32", "warmup_epochs=0"]


def tree(root: Path) -> dict[str, str]:
    """Relative path → sha256 (or "dir") of everything under ``root``."""
    return {
        p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def essl(*argv: str) -> int:
    return main(["pretrain", "mnist5k-simclr", *CHEAP, *argv, "--no-progress"])


def marked_run(path: Path) -> Path:
    """A folder that --overwrite could replace, were it not for the rule under test: marked, essl's files only."""
    prepare_run_dir(path, overwrite=False)
    (path / "config.yaml").write_text("method: simclr\n")
    (path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    return path


def test_overwrite_never_replaces_the_working_directory(tmp_path, monkeypatch, capsys):
    work = marked_run(tmp_path / "work")
    (work / "eval").mkdir()
    (work / "eval" / "knn.json").write_text("{}")
    monkeypatch.chdir(work)
    before = tree(work)
    assert essl("--out", ".", "--overwrite") == 2
    assert "working directory" in capsys.readouterr().err
    assert tree(work) == before


def test_overwrite_never_replaces_a_parent_of_the_working_directory(tmp_path, monkeypatch, capsys):
    parent = marked_run(tmp_path / "parent")
    (parent / "child").mkdir()
    monkeypatch.chdir(parent / "child")
    before = tree(tmp_path)
    assert essl("--out", "..", "--overwrite") == 2
    assert "parent of the working directory" in capsys.readouterr().err
    assert tree(tmp_path) == before
    for folder in (Path.home(), Path("/")):
        with pytest.raises(EsslError, match="home folder|file system root|parent"):
            check_replaceable(folder, "run", RUN_FILES)


def test_overwrite_never_replaces_a_data_root_or_a_folder_around_it(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "tests"))
    from image_folders import make_image_folder

    make_image_folder(tmp_path / "d" / "data", per_class={"train": 4, "test": 2})
    before = tree(tmp_path)
    folder = ["dataset=folder", "image_size=16", "views=crop_only,crop_only", "batch_size=4"]
    for out, root, why in (
        ("d/data", "d/data", "the data_root of this command"),
        ("d", "d/data", "holds the data_root"),
        ("d/data/train", "d/data", "inside the data_root"),
    ):
        assert essl(*folder, f"data_root={root}", "--out", out, "--overwrite") == 2
        err = capsys.readouterr().err
        assert why in err and root in err, err
        assert tree(tmp_path) == before


def test_overwrite_refuses_a_folder_holding_other_files(tmp_path, capsys):
    run = marked_run(tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    (run / "eval").mkdir()
    (run / "eval" / "plot.svg").write_text("<svg/>")
    before = tree(tmp_path)
    assert essl("--out", "run", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "eval/plot.svg" in err and "Nothing was touched" in err
    assert tree(tmp_path) == before


def test_overwrite_refuses_an_unmarked_folder_of_an_older_essl(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text("method: simclr\n")
    before = tree(tmp_path)
    assert essl("--out", "old", "--overwrite") == 2
    err = capsys.readouterr().err
    assert MARKER in err and "rm -r" in err
    assert tree(tmp_path) == before


def test_overwrite_replaces_a_marked_essl_run(tmp_path):
    assert essl("--out", "run") == 0
    run = tmp_path / "run"
    assert read_marker(run)["kind"] == "run" and not (run / LOCK).exists()
    first = (run / "checkpoint.pt").read_bytes()
    assert essl("seed=3", "--out", "run", "--overwrite") == 0
    assert (run / "checkpoint.pt").read_bytes() != first
    assert load_checkpoint(run / "checkpoint.pt")["config"]["seed"] == 3 and len(read_metrics(run)) == 1


def test_an_essl_folder_of_another_kind_is_not_replaced(tmp_path, capsys):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / MARKER).write_text(json.dumps({"kind": "demo"}))
    (demo / "results.md").write_text("| table |")
    before = tree(tmp_path)
    assert essl("--out", "demo", "--overwrite") == 2
    assert "results.md" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_export_overwrite_replaces_only_an_earlier_export(tmp_path, capsys):
    assert essl("--out", "run") == 0
    (tmp_path / "model.pt").write_bytes(b"my own weights")
    before = tree(tmp_path)
    assert main(["export", "run", "model.pt", "--overwrite"]) == 2
    assert "not an earlier `essl export`" in capsys.readouterr().err
    assert tree(tmp_path) == before
    assert main(["export", "run", "ok.pt"]) == 0
    assert main(["export", "run", "ok.pt", "--overwrite"]) == 0


# ------------------------------------------------------------------------------------------------ locks
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    (folder / LOCK).write_text(
        json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"})
    )


def test_a_lock_of_a_live_process_refuses_and_names_it(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = marked_run(tmp_path / "run")
        _write_lock(run, sleeper.pid)
        before = tree(tmp_path)
        for call in (
            lambda: pretrain(load_config("mnist5k-simclr", CHEAP), run, overwrite=True, progress=False),
            lambda: pretrain(None, run, resume=True, progress=False),
            lambda: acquire_lock(run, "run folder run"),
        ):
            with pytest.raises(EsslError, match=rf"in use by another essl process \(pid {sleeper.pid} on "):
                call()
        assert tree(tmp_path) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    run = marked_run(tmp_path / "run")
    _write_lock(run, 1, host="elsewhere.example")
    with pytest.raises(EsslError, match=rf"another machine; if you are sure it no longer does, delete .*{LOCK}"):
        acquire_lock(run, "run folder run")
    assert json.loads((run / LOCK).read_text())["host"] == "elsewhere.example"


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    assert essl("--out", "run") == 0
    run = tmp_path / "run"
    dead = _dead_pid()
    _write_lock(run, dead)
    assert main(["pretrain", "--resume", "run", "epochs=2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "took over the lock" in err and f"pid {dead}" in err
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2] and not (run / LOCK).exists()


def test_the_lock_is_released_after_an_error_and_after_ctrl_c(tmp_path, monkeypatch):
    assert essl("--out", "run") == 0
    run = tmp_path / "run"
    with pytest.raises(EsslError, match="already finished"):  # an error after the lock was taken
        pretrain(None, run, resume=True, progress=False)
    assert not (run / LOCK).exists()

    def interrupted(self):
        assert (self.run_dir / LOCK).is_file()  # held while training
        raise KeyboardInterrupt

    monkeypatch.setattr(Pretrainer, "_fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(load_config("mnist5k-simclr", CHEAP), tmp_path / "new", progress=False)
    assert (tmp_path / "new" / "config.yaml").is_file() and not (tmp_path / "new" / LOCK).exists()
    with pytest.raises(RuntimeError), hold_lock(run, "run folder run"):  # any exception releases it
        raise RuntimeError
    assert not (run / LOCK).exists()


def test_two_processes_on_one_out_folder_one_wins_and_one_is_refused(tmp_path):
    """A real race: both start together; the one that takes the lock is frozen while holding it, so the other
    must meet the lock, and is refused with the holder's pid; then the holder finishes its run."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    argv = [sys.executable, "-m", "essl", "pretrain", "mnist5k-simclr", *CHEAP, "--out", "r", "--no-progress"]
    procs = [
        subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    lock, holder = tmp_path / "r" / LOCK, None
    try:
        deadline = time.monotonic() + 300
        while holder is None and time.monotonic() < deadline:
            try:
                pid = json.loads(lock.read_text())["pid"]
                holder = next(p for p in procs if p.pid == pid)
            except (OSError, ValueError, KeyError, StopIteration):
                assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
                time.sleep(0.01)
        assert holder is not None, "no process took the lock"
        holder.send_signal(signal.SIGSTOP)  # hold the lock for as long as the other needs to meet it
        other = next(p for p in procs if p is not holder)
        _, err = other.communicate(timeout=300)
        holder.send_signal(signal.SIGCONT)
        out, herr = holder.communicate(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.communicate()
    assert other.returncode == 2 and "Traceback" not in err, err
    assert f"in use by another essl process (pid {holder.pid} on {socket.gethostname()}" in err, err
    assert holder.returncode == 0, herr
    run = tmp_path / "r"
    assert [r["epoch"] for r in read_metrics(run)] == [1] and load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert read_marker(run)["kind"] == "run" and not (run / LOCK).exists()


def test_an_evaluation_is_held_by_one_process(tmp_path, capsys):
    assert essl("--out", "run") == 0
    run = tmp_path / "run"
    (run / "eval").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(run / "eval", sleeper.pid)
        (run / "eval" / LOCK).rename(run / "eval" / f"{LOCK}.knn")
        assert main(["knn", "run"]) == 2
        assert f"in use by another essl process (pid {sleeper.pid} " in capsys.readouterr().err
        assert not (run / "eval" / "knn.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(["knn", "run"]) == 0  # the holder is gone: its lock is taken over, and released after
    assert (run / "eval" / "knn.json").is_file() and not list((run / "eval").glob(f"{LOCK}*"))
