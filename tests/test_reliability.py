"""Reliability of pretraining and evaluation (issue 9, part A): Ctrl-C and OS failures leave true messages and
intact files; results with other settings never replace the default ones."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from essl.data.batches import TensorBatches
from essl.errors import EsslError, Interrupted, os_reason, write_error
from essl.runs import load_checkpoint, read_metrics
from essl.training import pretrain as pretrain_module
from essl.training.config import load_config
from essl.training.pretrain import pretrain

TINY = ["subset=128", "batch_size=64", "knn_every=0", "warmup_epochs=0", "num_threads=1", "epochs=2"]


def _fail_in_epoch(monkeypatch, epoch_index: int, exc: BaseException, step: int = 0):
    original = TensorBatches.epoch

    def epochs(self, epoch, start_step=0):
        for i, batch in enumerate(original(self, epoch, start_step)):
            if epoch == epoch_index and i == step:
                raise exc
            yield batch

    monkeypatch.setattr(TensorBatches, "epoch", epochs)


def test_ctrl_c_in_epoch_one_says_no_checkpoint_exists(tmp_path, monkeypatch):
    _fail_in_epoch(monkeypatch, 0, KeyboardInterrupt())
    with pytest.raises(Interrupted, match="No checkpoint was written yet.*start the run again") as info:
        pretrain(load_config("mnist5k-simclr", TINY), tmp_path / "run", progress=False)
    assert "--resume" not in str(info.value) and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_ctrl_c_in_epoch_two_names_the_intact_checkpoint(tmp_path, monkeypatch):
    _fail_in_epoch(monkeypatch, 1, KeyboardInterrupt())
    with pytest.raises(Interrupted, match=r"checkpoint of epoch 1 .* is intact.*essl pretrain --resume"):
        pretrain(load_config("mnist5k-simclr", TINY), tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


def test_ctrl_c_during_the_checkpoint_write_waits_for_it(tmp_path, monkeypatch):
    """SIGINT in the middle of writing the checkpoint: the write completes, then the run stops with a message."""
    original = pretrain_module.save_checkpoint

    def interrupted_save(path, state):
        signal.raise_signal(signal.SIGINT)  # delivered to this thread, while the commit runs
        original(path, state)

    monkeypatch.setattr(pretrain_module, "save_checkpoint", interrupted_save)
    # Ctrl-C as in a terminal, whatever an earlier test in this worker process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(Interrupted, match="checkpoint of epoch 1 .* is intact"):
            pretrain(load_config("mnist5k-simclr", TINY), tmp_path / "run", progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1]
    assert [p.name for p in (tmp_path / "run").iterdir() if ".tmp" in p.name] == []


def test_disk_full_while_writing_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch):
    """torch reports a full disk as 'unexpected pos'; the message says what happened and what is intact."""
    run = tmp_path / "run"
    pretrain(load_config("mnist5k-simclr", TINY[:-1] + ["epochs=1"]), run, progress=False)
    ckpt = load_checkpoint(run / "checkpoint.pt")  # let the finished 1-epoch run continue for a second epoch
    ckpt["config"]["epochs"] = 2
    pretrain_module.save_checkpoint(run / "checkpoint.pt", ckpt)
    before = (run / "checkpoint.pt").read_bytes()
    real_open = open

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, data):
            self.n += len(data)
            if self.n > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def full_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return FullDisk(fh) if "checkpoint.pt.tmp" in str(path) and "w" in mode else fh

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(
        EsslError,
        match=r"Cannot write .*checkpoint.pt: no space left on device\. The checkpoint "
        r"of epoch 1 .* is intact\. To continue, free some space and continue with "
        r"`essl pretrain --resume",
    ):
        pretrain(None, run, resume=True, progress=False)
    monkeypatch.setattr("builtins.open", real_open)
    assert (run / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in run.iterdir() if ".tmp" in p.name] == []


@pytest.mark.parametrize(
    "code,reason",
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_failures_are_described_through_torch_wrappers(code, reason):
    try:
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904
    except RuntimeError as exc:
        assert os_reason(exc) == reason
        assert str(write_error("x/checkpoint.pt", exc, "Nothing was lost.")).startswith(
            f"Cannot write x/checkpoint.pt: {reason}. Nothing was lost. To continue,"
        )


def test_ctrl_c_in_other_commands_gives_no_pretraining_advice(monkeypatch, capsys):
    import essl.evaluation.commands as commands
    import essl.photonics.generate as phc_generate
    from essl.cli import main

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_target", ctrl_c)
    assert main(["knn", "runs/x"]) == 130
    err = capsys.readouterr().err
    assert "result being computed was not written" in err and "--resume" not in err and "checkpoint" not in err
    monkeypatch.setattr(phc_generate, "generate", ctrl_c)
    assert main(["phc", "generate", "--family", "p1", "--n", "2", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "run the same command again to continue" in err and "--resume" not in err


def test_an_os_failure_anywhere_is_one_line_without_traceback(monkeypatch, capsys):
    import essl.evaluation.commands as commands
    from essl.cli import main

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/x")

    monkeypatch.setattr(commands, "_target", read_only)
    assert main(["knn", "runs/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("essl: error: operating-system failure on /data/x: permission denied.") and "Trace" not in err


def test_resume_removes_temporaries_of_a_killed_write(tmp_path, capsys):
    """A write killed midway (kill -9) leaves ``.NAME.tmp-PID``; --resume removes those of dead processes, says so
    in one line, and continues."""
    import subprocess
    import sys

    run = tmp_path / "run"
    pretrain(load_config("mnist5k-simclr", TINY[:-1] + ["epochs=1"]), run, progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = [
        run / f".checkpoint.pt.tmp-{pid}",
        run / f".metrics.jsonl.tmp-{pid}",
        run / "checkpoints" / f".epoch_0001.pt.tmp-{pid}",
    ]
    left[-1].parent.mkdir()
    for path in left:
        path.write_bytes(b"\0" * 1000)
    mine = run / f".config.yaml.tmp-{os.getppid()}"  # a live process's write in progress is left alone
    mine.write_text("x")
    capsys.readouterr()
    pretrain(None, run, resume=True, progress=False, changes={"epochs": 2})
    assert not any(p.exists() for p in left) and mine.exists()
    note = [line for line in capsys.readouterr().err.splitlines() if "interrupted write" in line]
    assert len(note) == 1 and f".checkpoint.pt.tmp-{pid}" in note[0]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2


def test_a_result_that_cannot_be_written_is_kept_in_the_error(tmp_path, monkeypatch):
    """write_result: disk full → ResultNotSaved with the full JSON (the CLI prints it) and what happened."""
    import json

    import essl.runs as runs
    from essl.errors import ResultNotSaved

    def full(path, data, fsync=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "write_atomic", full)
    with pytest.raises(ResultNotSaved, match=r"eval/knn.json: no space left on device.*standard output") as info:
        runs.write_result(tmp_path, "knn", {"top1": 12.5})
    assert json.loads(info.value.text)["top1"] == 12.5


def test_refused_pickled_object_is_named_without_torch_advice(tmp_path):
    import numpy as np
    import torch

    torch.save({"model": {}, "extra": np.zeros(2)}, tmp_path / "c.pt")
    with pytest.raises(EsslError) as info:
        load_checkpoint(tmp_path / "c.pt")
    text = str(info.value)
    assert "`numpy._core.multiarray._reconstruct`" in text or "`numpy.core.multiarray._reconstruct`" in text
    assert "weights_only" not in text and "add_safe_globals" not in text and "trust" not in text
