"""Pretraining end to end on a small MNIST-5k subset: metrics, checkpoints, exact resume, run-folder safety."""

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from essl.errors import EsslError
from essl.data.batches import TensorBatches
from essl.runs import load_checkpoint, prepare_run_dir, read_metrics
from essl.training.config import load_config
from essl.training.pretrain import pretrain
from essl.training.schedule import warmup_cosine

TINY = ["subset=256", "batch_size=64", "knn_every=1", "warmup_epochs=1", "num_threads=1"]


def test_one_epoch_esimclr_writes_metrics_and_checkpoint(tmp_path):
    run = pretrain(load_config("mnist5k-esimclr", TINY + ["epochs=1"]), tmp_path / "run", progress=False)
    rows = read_metrics(run)
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and rows[0]["step"] == 4
    for key in ("loss", "ssl_loss", "pred_loss/rotation", "pred_acc/rotation", "lr", "images_per_s", "knn_top1"):
        assert key in rows[0], key
    assert rows[0]["loss"] == pytest.approx(rows[0]["ssl_loss"] + 0.4 * rows[0]["pred_loss/rotation"], rel=1e-4)
    ckpt = load_checkpoint(run / "checkpoint.pt")  # weights-only loading
    assert ckpt["epoch"] == 1 and ckpt["config"]["equivariance"][0]["group"] == "rotation"
    assert any(k.startswith("heads.rotation.") for k in ckpt["model"])
    assert (run / "config.yaml").is_file()


def _params(run):
    return load_checkpoint(run / "checkpoint.pt")["model"]


@pytest.mark.parametrize("preset", ["mnist5k-esimclr", "mnist5k-ebyol"])  # E-BYOL: with a momentum target network
def test_resume_after_interruption_is_exact(tmp_path, monkeypatch, preset):
    cfg = TINY + ["epochs=2", "knn_every=0"]
    straight = pretrain(load_config(preset, cfg), tmp_path / "straight", progress=False)

    original = TensorBatches.epoch

    def dies_in_epoch_two(self, epoch, start_step=0):
        for i, batch in enumerate(original(self, epoch, start_step)):
            if epoch == 1 and i == 2:
                raise KeyboardInterrupt  # a kill in the middle of the second epoch
            yield batch

    monkeypatch.setattr(TensorBatches, "epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(load_config(preset, cfg), tmp_path / "killed", progress=False)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(TensorBatches, "epoch", original)
    pretrain(None, tmp_path / "killed", resume=True, progress=False)

    a, b = _params(straight), _params(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in read_metrics(tmp_path / "killed")] == [1, 2]
    assert read_metrics(straight)[1]["loss"] == read_metrics(tmp_path / "killed")[1]["loss"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_cli_resume(tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "essl",
        "pretrain",
        "mnist5k-simclr",
        *TINY,
        "subset=512",
        "epochs=3",
        "knn_every=0",
        "--out",
        str(run),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = load_checkpoint(run / "checkpoint.pt")["epoch"]
    assert done >= 1
    res = subprocess.run(
        [sys.executable, "-m", "essl", "pretrain", "--resume", str(run), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    if done == 3:  # the machine was fast enough to finish: resuming a finished run is refused clearly
        assert res.returncode == 2 and "already finished" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 3


def test_existing_run_folder_is_never_replaced_silently(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(EsslError, match="already exists"):
        pretrain(load_config("mnist5k-simclr", TINY + ["epochs=1"]), run, progress=False)
    assert (run / "precious.txt").read_text() == "keep me"
    with pytest.raises(EsslError, match="precious.txt"):  # --overwrite replaces only what essl wrote
        pretrain(load_config("mnist5k-simclr", TINY + ["epochs=1", "knn_every=0"]), run, overwrite=True, progress=False)
    assert (run / "precious.txt").read_text() == "keep me"
    (run / "precious.txt").unlink()
    pretrain(load_config("mnist5k-simclr", TINY + ["epochs=1", "knn_every=0"]), run, progress=False)
    first = (run / "checkpoint.pt").read_bytes()
    pretrain(load_config("mnist5k-simclr", TINY + ["epochs=1", "seed=1"]), run, overwrite=True, progress=False)
    assert (run / "checkpoint.pt").read_bytes() != first and read_metrics(run)[0]["epoch"] == 1


def test_a_run_that_cannot_start_writes_and_replaces_nothing(tmp_path):
    """Missing data or a batch larger than the data fail before the run folder is created or replaced."""
    with pytest.raises(EsslError, match="No CIFAR-10 data"):
        pretrain(load_config("cifar10-simclr", [f"data_root={tmp_path / 'nowhere'}"]), tmp_path / "a", progress=False)
    with pytest.raises(EsslError, match="fewer than batch_size"):
        pretrain(load_config("mnist5k-simclr", ["subset=8"]), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    old = tmp_path / "old"  # an essl run folder (marked) that --overwrite may replace, once the new run can start
    prepare_run_dir(old, overwrite=False)
    (old / "config.yaml").write_text("keep me")
    with pytest.raises(EsslError, match="fewer than batch_size"):
        pretrain(load_config("mnist5k-simclr", ["subset=8"]), old, overwrite=True, progress=False)
    assert (old / "config.yaml").read_text() == "keep me"


@pytest.mark.parametrize(
    "preset", ["mnist5k-simsiam", "mnist5k-ebarlow", "mnist5k-ebyol", "mnist5k-evicreg", "mnist5k-emocov3"]
)
def test_other_methods_train(tmp_path, preset):
    run = pretrain(load_config(preset, TINY + ["epochs=1", "knn_every=0"]), tmp_path / "r", progress=False)
    row = read_metrics(run)[0]
    assert np.isfinite(row["loss"])
    if preset == "mnist5k-simsiam":
        assert -1.0 <= row["ssl_loss"] <= 0.0  # negative cosine similarity
    if preset == "mnist5k-ebyol":
        assert 0.0 <= row["ssl_loss"] <= 8.0  # two terms of 2 - 2 cos
    ckpt = load_checkpoint(run / "checkpoint.pt")
    has_target = preset in ("mnist5k-ebyol", "mnist5k-emocov3")
    assert any(k.startswith("target.backbone.") for k in ckpt["model"]) == has_target
    if has_target:  # the momentum position: τ of the last of the 4 steps on BYOL's cosine from 0.99 to 1
        assert ckpt["target_momentum"] == pytest.approx(1 - 0.01 * (math.cos(math.pi * 3 / 4) + 1) / 2)
        assert row["target_momentum"] == ckpt["target_momentum"]
        model = ckpt["model"]
        online = [k for k in model if k.startswith("backbone.") and k.endswith("weight")]
        assert not all(torch.equal(model[k], model["target." + k]) for k in online)  # the target lags behind


def test_warmup_cosine_schedule():
    lr = warmup_cosine(1.0, 0.1, total_steps=110, warmup_steps=10)
    assert len(lr) == 110
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0) and lr[-1] == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 99 / 100)))
    assert np.all(np.diff(lr[10:]) <= 1e-12)


def test_cli_errors_are_clear(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "essl", *args], capture_output=True, text=True, timeout=120)

    r = run("pretrain", "no-such-preset")
    assert r.returncode == 2 and "Unknown preset" in r.stderr and "Traceback" not in r.stderr
    r = run("pretrain", "mnist5k-simclr", "epochz=3")
    assert r.returncode == 2 and "Unknown setting 'epochz'" in r.stderr
    r = run("pretrain", "mnist5k-simclr", "method=moco")
    assert r.returncode == 2 and "method must be one of" in r.stderr
    r = run("pretrain", "cifar10-esimclr", "data_root=" + str(tmp_path / "nope"))
    assert r.returncode == 2 and "cifar-10-batches-py" in r.stderr
    r = run("knn", str(tmp_path))
    assert r.returncode == 2 and "No checkpoint" in r.stderr
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    r = run("knn", str(tmp_path))
    assert r.returncode == 2 and "Cannot read checkpoint" in r.stderr
