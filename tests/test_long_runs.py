"""Long runs: step checkpoints and exact mid-epoch resume, SIGTERM, milestones, evaluation of a milestone."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from essl.cli import main as cli_main
from essl.errors import EsslError
from essl.training import pretrain as pretrain_module
from essl.data.batches import TensorBatches
from essl.runs import load_checkpoint, read_changes, read_config, read_metrics, resolve_checkpoint
from essl.training.config import load_config, nonfinite_settings
from essl.training.model import ESSLModel
from essl.training.pretrain import Pretrainer, pretrain
from essl.training.schedule import warmup_cosine

LAUNCH_ENV_KEYS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "GROUP_RANK",
    "ROLE_RANK",
)
# 256 images at batch 64: 4 steps per epoch; step checkpoints every 3 steps (global steps 3 and 6).
TINY = [
    "subset=256",
    "batch_size=64",
    "knn_every=0",
    "warmup_epochs=1",
    "num_threads=1",
    "epochs=2",
    "checkpoint_every=3",
]


def _same_weights(a, b):
    a, b = load_checkpoint(a / "checkpoint.pt")["model"], load_checkpoint(b / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every interrupted one is compared with."""
    return pretrain(load_config("mnist5k-esimclr", TINY), tmp_path_factory.mktemp("s") / "straight", progress=False)


def _interrupt_at(monkeypatch, epoch: int, step: int, action):
    original = pretrain_module.TensorBatches.epoch

    def batches(self, e, start_step=0):
        for i, batch in enumerate(original(self, e, start_step), start=start_step):
            if (e, i) == (epoch, step):
                action()
            yield batch

    monkeypatch.setattr(pretrain_module.TensorBatches, "epoch", batches)
    return original


def _die():
    raise KeyboardInterrupt


def test_mid_epoch_resume_is_bit_identical(straight, tmp_path, monkeypatch):
    run = tmp_path / "killed"
    original = _interrupt_at(monkeypatch, 1, 3, _die)  # dies before global step 8; the last checkpoint is step 6
    with pytest.raises(KeyboardInterrupt):
        pretrain(load_config("mnist5k-esimclr", TINY), run, progress=False)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["step"], ckpt["steps_per_epoch"]) == (1, 6, 4) and "partial" in ckpt
    monkeypatch.setattr(pretrain_module.TensorBatches, "epoch", original)
    pretrain(None, run, resume=True, progress=False)
    _same_weights(straight, run)
    assert read_metrics(run) == [
        {**r, "images_per_s": m["images_per_s"], "epoch_time_s": m["epoch_time_s"]}
        for r, m in zip(read_metrics(straight), read_metrics(run))
    ]


def test_sigterm_writes_a_checkpoint_at_the_current_step_and_exits_cleanly(straight, tmp_path, monkeypatch, capsys):
    run = tmp_path / "preempted"
    original = _interrupt_at(monkeypatch, 0, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code = cli_main(["pretrain", "mnist5k-esimclr", *TINY, "--out", str(run), "--no-progress"])
    assert code == 143
    err = capsys.readouterr().err
    assert "SIGTERM" in err and "step 2 of 4 in epoch 1" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is only installed while training
    monkeypatch.setattr(pretrain_module.TensorBatches, "epoch", original)
    assert cli_main(["pretrain", "--resume", str(run), "--no-progress"]) == 0
    _same_weights(straight, run)


def test_milestones_are_kept_and_evaluated_by_name(tmp_path, capsys):
    run = pretrain(
        load_config("mnist5k-simclr", TINY[:-1] + ["keep_checkpoints=[1]", "keep_every=2"]),
        tmp_path / "run",
        progress=False,
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert load_checkpoint(run / "checkpoints" / "epoch_0001.pt")["epoch"] == 1
    assert load_checkpoint(run / "checkpoints" / "epoch_0002.pt")["epoch"] == 2
    assert (
        resolve_checkpoint(run, "1") == resolve_checkpoint(run, "epoch_0001") == run / "checkpoints" / "epoch_0001.pt"
    )
    with pytest.raises(EsslError, match="kept: epoch_0001, epoch_0002"):
        resolve_checkpoint(run, "epoch_0003")
    assert cli_main(["knn", str(run), "--checkpoint", "epoch_0001", "--k", "20"]) == 0
    assert "epoch_0001" in capsys.readouterr().out


def test_resumed_shards_continue_the_global_batches(monkeypatch):
    """Resuming at step s of an epoch gives the same global batches from s on, whatever the process count."""
    images = torch.arange(40 * 4, dtype=torch.uint8).reshape(40, 1, 2, 2)
    single = list(TensorBatches(images, 8, seed=3).epoch(2, start_step=3))
    for world in (2, 4):
        shards = [list(TensorBatches(images, 8, 3, rank, world).epoch(2, start_step=3)) for rank in range(world)]
        assert len(shards[0]) == len(single) == 2
        for step, batch in enumerate(single):
            assert torch.equal(torch.cat([s[step] for s in shards]), batch)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("checkpoint_every=-1", "checkpoint_every must be a whole number >= 0"),
        ("keep_every=-2", "keep_every must be a whole number >= 0"),
        ("keep_checkpoints=[0]", "keep_checkpoints lists epochs"),
        ("keep_checkpoints=[a]", "keep_checkpoints must be a list of epochs"),
        ("log_every=0", "log_every must be a whole number >= 1"),
    ],
)
def test_checkpoint_settings_are_validated(bad, match):
    with pytest.raises(EsslError, match=match):
        load_config("mnist5k-simclr", [bad])


# ------------------------------------------------------------------------------- resume with changed settings
def test_resume_extends_a_run_with_a_recomputed_schedule(tmp_path):
    run = tmp_path / "run"
    assert cli_main(["pretrain", "mnist5k-simclr", *TINY, "epochs=1", "--out", str(run), "--no-progress"]) == 0
    assert cli_main(["pretrain", "--resume", str(run), "epochs=2", "--no-progress"]) == 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    cfg = read_config(run)
    base = cfg.lr * 64 / 256  # the schedule of a 2-epoch run, continued from step 4
    new = warmup_cosine(base, base * cfg.final_lr_ratio, 8, 4)
    assert rows[1]["lr"] == pytest.approx(float(new[7]))
    assert [c["changes"] for c in read_changes(run)] == [{"epochs": [1, 2]}]
    assert read_config(run).epochs == 2 and load_checkpoint(run / "checkpoint.pt")["config"]["epochs"] == 2


def test_resume_refuses_unsafe_changes_and_changes_nothing(tmp_path, capsys):
    run = pretrain(load_config("mnist5k-simclr", TINY[:-1] + ["epochs=1"]), tmp_path / "run", progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for args, message in [
        (["method=simsiam"], "cannot change method (the checkpoint's weights"),
        (["batch_size=32", "epochs=3"], "cannot change batch_size (the data order"),
        (["temperature=0.2"], "cannot change temperature (it changes the objective"),
        (["lr=0.01", "epochs=2"], "Pass --allow-change"),
        (["epochs=1"], "already finished all 1 epochs"),
        (["epochz=2"], "Unknown setting 'epochz'"),
    ]:
        assert cli_main(["pretrain", "--resume", str(run), *args, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert cli_main(["pretrain", "--resume", str(run), "lr=0.01", "epochs=2", "--allow-change", "--no-progress"]) == 0
    assert read_changes(run)[0]["changes"] == {"lr": [0.25, 0.01], "epochs": [1, 2]}
    assert read_changes(run)[0]["allow_change"] is True


def test_nan_loss_advice_is_a_command_that_works(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_forward = ESSLModel.forward
    calls = {"n": 0}

    def forward(self, *a, **kw):
        out = real_forward(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 5:  # the first step of epoch 2
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ESSLModel, "forward", forward)
    assert cli_main(["pretrain", "mnist5k-simclr", *TINY, "log_every=2", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "epoch 2, step 1" in err, err
    command = re.search(r"`essl (pretrain --resume [^`]+)`", err).group(1).split()
    assert command[2] == str(run) and "lr=0.125" in command and "--allow-change" in command
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4  # the end of epoch 1: nothing written after
    monkeypatch.setattr(ESSLModel, "forward", real_forward)
    assert cli_main([*command, "--no-progress"]) == 0
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_nan_from_a_non_finite_setting_is_named(tmp_path):
    cfg = load_config("mnist5k-simclr", TINY[:-1] + ["epochs=1"])
    trainer = Pretrainer(cfg, tmp_path / "unused", progress=False)
    trainer.cfg = dataclasses.replace(cfg, temperature=float("nan"))
    assert nonfinite_settings(trainer.cfg) == ["temperature=nan"]
    message = trainer.nonfinite_message(0, 1, 2)
    assert "temperature=nan is not a finite number" in message and "epoch 1, step 1-2" in message


def test_mid_epoch_checkpoint_continues_under_torchrun(tmp_path, monkeypatch):
    """A 1-process checkpoint at step 2 of epoch 1 continues with 2 processes from that step (same global
    batches; the augmentation streams are reseeded)."""
    run = tmp_path / "run"
    original = _interrupt_at(monkeypatch, 0, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert cli_main(["pretrain", "mnist5k-esimclr", *TINY, "--out", str(run), "--no-progress"]) == 143
    monkeypatch.setattr(pretrain_module.TensorBatches, "epoch", original)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS and not k.startswith("SLURM_")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "essl",
        "pretrain",
        "--resume",
        str(run),
        "--no-progress",
    ]
    res = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["world_size"], ckpt["epoch"], ckpt["step"]) == (2, 2, 8)
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "essl", *args]


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc): torchrun starts each worker in a session of its own, so a
    crash of the machine is a kill of every one of them."""
    children: dict[int, list[int]] = {}
    for stat in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{stat}/stat") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


@pytest.mark.slow
@pytest.mark.distributed
def test_kill_9_of_a_torchrun_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    """kill -9 of a whole 2-process torchrun (launcher and both workers, as a crashed machine) in the middle of
    an epoch, then ``--resume`` under torchrun: the same weights and metrics as an uninterrupted 2-process run,
    and no temporary file of the killed writes left behind."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS and not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    settings = [*TINY[:-2], "epochs=3", "checkpoint_every=1"]  # 4 steps per epoch, a checkpoint after every step
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    res = subprocess.run(
        _torchrun("pretrain", "mnist5k-esimclr", *settings, "--out", str(straight), "--no-progress"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]

    proc = subprocess.Popen(
        _torchrun("pretrain", "mnist5k-esimclr", *settings, "--out", str(killed), "--no-progress"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        step = 0
        while step < 6 and proc.poll() is None and time.time() < deadline:  # past step 2 of epoch 2
            time.sleep(0.02)
            if (killed / "checkpoint.pt").is_file():
                step = load_checkpoint(killed / "checkpoint.pt")["step"]
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        tree = _process_tree(proc.pid)
        for pid in tree:  # the launcher and both workers at once, as a crashed machine
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert len(tree) >= 3
    done = load_checkpoint(killed / "checkpoint.pt")
    assert done["world_size"] == 2 and done["step"] < 12

    res = subprocess.run(
        _torchrun("pretrain", "--resume", str(killed), "--no-progress"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == 12
    _same_weights(straight, killed)
    a, b = read_metrics(straight), read_metrics(killed)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [p.name for p in killed.rglob(".*.tmp-*")] == []
