"""The online linear probe (detached features of view 1, own optimizer) and the kNN monitor's subsets."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from essl.runs import load_checkpoint, prepare_run_dir, read_metrics
from essl.training.config import load_config
from essl.training.model import ESSLModel
from essl.training.online_probe import OnlineProbe
from essl.training.pretrain import Pretrainer, pretrain

TINY = [
    "subset=128",
    "batch_size=32",
    "warmup_epochs=0",
    "num_threads=1",
    "precision=fp32",
    "knn_every=1",
    "knn_subset=20",
]


def test_the_probe_never_changes_the_backbone_or_projector_gradients():
    """Same step with and without the probe: bit-identical gradients of every pretraining parameter (the probe
    reads detached features and has its own parameters and optimizer)."""
    cfg = load_config("mnist5k-esimclr", TINY)
    torch.manual_seed(0)
    model = ESSLModel(cfg, 1)
    x1, x2 = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    xs, g = torch.randn(32, 1, 20, 20), torch.arange(4).repeat(8)
    labels = torch.arange(8) % 10

    def grads(with_probe: bool):
        model.zero_grad(set_to_none=True)
        out = model(x1, x2, [(xs, g)], return_features=with_probe)
        out["loss"].backward()
        if with_probe:
            probe = OnlineProbe(model.backbone.feature_dim, 10, torch.device("cpu"))
            probe.step(out["features"], labels)
            assert probe.head.weight.grad is not None and out["features"].grad_fn is None
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    a, b = grads(False), grads(True)
    assert a.keys() == b.keys() and any(n.startswith("projector") for n in a)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_run_with_the_probe_ends_with_the_same_weights_and_logs_it(tmp_path):
    with_probe = pretrain(load_config("mnist5k-esimclr", TINY + ["epochs=2"]), tmp_path / "on", progress=False)
    without = pretrain(
        load_config("mnist5k-esimclr", TINY + ["epochs=2", "online_probe=false"]), tmp_path / "off", progress=False
    )
    a, b = (load_checkpoint(r / "checkpoint.pt") for r in (with_probe, without))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "online_probe" in a and "online_probe" not in b
    rows, rows_off = read_metrics(with_probe), read_metrics(without)
    for row in rows:
        assert 0 <= row["online_probe_top1"] <= 100 and 0 <= row["online_probe_val_top1"] <= 100
        assert 0 <= row["knn_top1"] <= 100
    assert [r["knn_top1"] for r in rows] == [r["knn_top1"] for r in rows_off]
    assert "online_probe_top1" not in rows_off[0]


def test_the_probe_is_restored_from_the_checkpoint(tmp_path):
    cfg = load_config("mnist5k-esimclr", TINY + ["epochs=2"])
    run = pretrain(load_config("mnist5k-esimclr", TINY + ["epochs=1"]), tmp_path / "r", progress=False)
    saved = load_checkpoint(run / "checkpoint.pt")["online_probe"]
    trainer = Pretrainer(cfg, run, progress=False)
    trainer.restore(load_checkpoint(run / "checkpoint.pt"))
    assert torch.equal(trainer.probe.head.weight, saved["head"]["weight"])
    assert trainer.probe.optimizer.state_dict()["state"].keys() == saved["optimizer"]["state"].keys()


def test_knn_subset_is_per_class_and_fixed(tmp_path):
    prepare_run_dir(tmp_path / "r", overwrite=False)
    trainer = Pretrainer(load_config("mnist5k-simclr", TINY), tmp_path / "r", progress=False)
    m = trainer.monitor
    assert torch.bincount(m.bank_labels).tolist() == [20] * 10 and torch.bincount(m.query_labels).tolist() == [20] * 10
    again = Pretrainer(load_config("mnist5k-simclr", TINY), tmp_path / "r", progress=False).monitor
    assert torch.equal(again.bank.images, m.bank.images) and torch.equal(again.queries.images, m.queries.images)


def test_no_probe_without_labels(tmp_path):
    """An unlabelled image folder (images directly in the folder): no probe, no monitor, training works."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    cfg = load_config(
        "mnist5k-simclr",
        [
            "dataset=folder",
            f"data_root={tmp_path / 'images'}",
            "image_size=16",
            "views=crop_only@16,crop_only@16",
            "batch_size=16",
            "num_threads=1",
            "precision=fp32",
            "epochs=1",
        ],
    )
    assert cfg.online_probe is True
    prepare_run_dir(tmp_path / "run", overwrite=False)
    trainer = Pretrainer(cfg, tmp_path / "run", progress=False)
    assert trainer.probe is None and trainer.monitor is None
    row = trainer.fit()[0]
    assert "online_probe_top1" not in row and "knn_top1" not in row
