"""Loggers (logger=tensorboard|wandb), the start-up summary and per-epoch lines, and RUN/run.json provenance."""

import json
import sys
import types

import pytest
import yaml

from essl.errors import EsslError
from essl.extras import MissingExtra
from essl.runs import read_metrics
from essl.training import loggers, provenance
from essl.training.config import load_config
from essl.training.pretrain import pretrain

TINY = ["subset=256", "batch_size=64", "knn_every=1", "knn_subset=10", "num_threads=1", "log_every=2"]


def scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_summary_and_run_json(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    cfg = load_config("mnist5k-esimclr", TINY + ["epochs=2", "logger=tensorboard"])
    run = pretrain(cfg, tmp_path / "run", progress=False)
    err = capsys.readouterr().err

    tb, rows = scalars(run), read_metrics(run)
    steps = [2, 4, 6, 8]  # 4 steps per epoch, logged every 2
    for tag in ("loss", "ssl_loss", "pred_loss/rotation", "pred_acc/rotation", "lr", "images_per_s"):
        assert [s for s, _ in tb[f"train/{tag}"]] == steps, tag
    assert [s for s, _ in tb["train/online_probe_top1"]] == steps
    # the two windows of an epoch average to the epoch's mean loss in metrics.jsonl
    loss = dict(tb["train/loss"])
    assert (loss[2] + loss[4]) / 2 == pytest.approx(rows[0]["loss"], rel=1e-5)
    assert (loss[6] + loss[8]) / 2 == pytest.approx(rows[1]["loss"], rel=1e-5)
    assert dict(tb["train/lr"])[4] == pytest.approx(rows[0]["lr"])
    for key in ("loss", "knn_top1", "online_probe_top1", "epoch_time_s"):
        assert tb[f"epoch/{key}"] == [(4, pytest.approx(rows[0][key])), (8, pytest.approx(rows[1][key]))], key

    # the start-up summary, the short-epoch warning, one line per epoch (no progress bar)
    assert (
        "essl: data mnist5k: 256 images, 10 classes, 1 channel(s), 28 px; 4 steps per epoch at global batch 64" in err
    )
    assert "backbone parameters" in err and "precision auto" not in err  # resolved
    assert "warning: an epoch is only 4 step(s) (256 images at batch_size=64)" in err
    assert "Lower the batch (batch_size=8 gives 32 steps) or raise epochs." in err
    assert "epoch 1/2: loss " in err and "epoch 2/2: loss " in err and "kNN top-1" in err

    record = json.loads((run / "run.json").read_text())
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert record["precision"] in ("bf16", "fp32") and stored["precision"] == record["precision"]
    assert f"precision {record['precision']}," in err
    for key in ("essl", "torch", "kornia", "python", "command", "host", "device", "world_size", "git_commit"):
        assert key in record, key
    assert record["status"] == "finished" and record["started"] <= record["ended"] and record["resumes"] == []
    assert record["device"] == "cpu" and record["world_size"] == 1
    data = record["data"]
    assert (data["images"], data["classes"], data["channels"], data["steps_per_epoch"]) == (256, 10, 1, 4)


def test_resume_appends_to_run_json_and_continues_the_events(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    cfg = load_config("mnist5k-simclr", TINY + ["epochs=1", "logger=tensorboard"])
    run = pretrain(cfg, tmp_path / "r", progress=False, echo=False)  # as essl sweep runs its runs: quiet
    assert "essl: data" not in capsys.readouterr().err
    pretrain(None, run, resume=True, progress=False, changes={"epochs": 2})
    err = capsys.readouterr().err
    assert "essl: data mnist5k" in err and "epoch 2/2: loss" in err and "epoch 1/2" not in err
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and len(record["resumes"]) == 1
    resumed = record["resumes"][0]
    assert (resumed["from_epoch"], resumed["from_step"], resumed["status"]) == (1, 0, "finished")
    assert resumed["started"] >= record["ended"]
    assert [s for s, _ in scalars(run)["train/loss"]] == [2, 4, 6, 8]


def test_failed_run_records_its_end(tmp_path, monkeypatch):
    from essl.training.pretrain import Pretrainer

    def boom(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Pretrainer, "_fit", boom)
    with pytest.raises(RuntimeError):
        pretrain(load_config("mnist5k-simclr", TINY + ["epochs=1"]), tmp_path / "r", progress=False)
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["status"] == "failed" and record["ended"]


@pytest.mark.parametrize("extra", ["tensorboard", "wandb"])
def test_missing_logger_extra_is_named_before_anything_is_written(tmp_path, monkeypatch, extra):
    monkeypatch.setitem(sys.modules, extra, None)  # `import extra` raises ImportError
    cfg = load_config("mnist5k-simclr", TINY + ["epochs=1", f"logger={extra}"])
    with pytest.raises(MissingExtra, match=rf"pip install 'essl\[{extra}\]'") as info:
        pretrain(cfg, tmp_path / "r", progress=False)
    assert f"logger={extra}" in str(info.value)
    assert not (tmp_path / "r").exists()


class FakeWandb(types.ModuleType):
    """Records what essl hands to ``wandb.init`` and ``run.log`` (wandb itself is an optional extra)."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, values, step):
                fake.logged.append((step, values))

            def finish(self):
                fake.finished += 1

        return Run()


def test_wandb_is_offline_unless_configured_and_resumes_its_run(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run = pretrain(load_config("mnist5k-simclr", TINY + ["epochs=1", "logger=wandb"]), tmp_path / "r", progress=False)
    init = fake.inits[0]
    assert init["mode"] == "offline" and init["dir"] == str(run) and init["config"]["logger"] == "wandb"
    assert [s for s, v in fake.logged if "train/loss" in v] == [2, 4] and "epoch/loss" in fake.logged[-1][1]
    assert fake.finished == 1

    monkeypatch.setenv("WANDB_API_KEY", "x")  # configured: online, and the resumed run continues the same W&B run
    pretrain(None, run, resume=True, progress=False, changes={"epochs": 2})
    assert fake.inits[1]["mode"] == "online" and fake.inits[1]["id"] == init["id"]
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.wandb_mode() == "disabled"

    def no_network(**kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(fake, "init", no_network)  # W&B fails to start: a clear error, the run's end recorded
    with pytest.raises(EsslError, match="W&B did not start in disabled mode .ConnectionError: api.wandb.ai"):
        pretrain(None, run, resume=True, progress=False, changes={"epochs": 3})
    assert json.loads((run / "run.json").read_text())["resumes"][-1]["status"] == "failed"


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    assert provenance.git_commit(tmp_path) is None
    commit = provenance.git_commit()  # the tests run from a checkout
    assert commit is None or len(commit["commit"]) == 40
