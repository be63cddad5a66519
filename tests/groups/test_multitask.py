"""Several predicted groups in one run, each with its own head and λ (config ``equivariance:`` list)."""

from __future__ import annotations

import json
import math

import torch

from essl.training.config import load_config
from essl.training.model import ESSLModel
from essl.training.pretrain import Pretrainer, pretrain
from image_folders import make_image_folder

torch.set_num_threads(1)


TASKS = (
    "[{group: rotation, weight: 0.4, view: crop_only_small, head: small}, "
    "{group: hflip, weight: 0.2, view: crop_only_small, head: small}]"
)


def overrides(root) -> list[str]:
    return [
        f"data_root={root}",
        "dataset=folder",
        "image_size=16",
        "views=[crop_only_small,crop_only_small]",
        "epochs=1",
        "batch_size=16",
        "knn_every=0",
        "num_threads=1",
        "precision=fp32",
        "warmup_epochs=0",
        f"equivariance={TASKS}",
    ]


def test_two_predicted_groups_train_together_and_both_losses_are_logged(tmp_path):
    make_image_folder(tmp_path / "data", {"train": 16, "test": 16})
    cfg = load_config("mnist5k-simclr", overrides(tmp_path / "data"))
    assert [(t.group, t.weight) for t in cfg.equivariance] == [("rotation", 0.4), ("hflip", 0.2)]
    run = pretrain(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    for name in ("rotation", "hflip"):
        assert math.isfinite(row[f"pred_loss/{name}"]) and row[f"pred_loss/{name}"] > 0
        assert 0.0 <= row[f"pred_acc/{name}"] <= 1.0
    # the logged total is the SSL loss plus Σ λ·L_pred (averaged over the same steps)
    expected = row["ssl_loss"] + 0.4 * row["pred_loss/rotation"] + 0.2 * row["pred_loss/hflip"]
    assert abs(row["loss"] - expected) < 1e-4 * max(1.0, abs(expected))


def test_both_heads_get_gradients_with_their_own_class_counts(tmp_path):
    make_image_folder(tmp_path / "data", {"train": 16, "test": 16})
    cfg = load_config("mnist5k-simclr", overrides(tmp_path / "data"))
    trainer = Pretrainer(cfg, tmp_path / "unused", progress=False)
    model: ESSLModel = trainer.model
    assert [head[-1].out_features for head in model.heads.values()] == [4, 2]
    torch.manual_seed(0)
    x1, x2, predictions = trainer.make_inputs(trainer.train.images[:16])
    assert [p[0].shape[0] for p in predictions] == [4 * 16, 2 * 16]
    out = model(x1, x2, predictions)
    manual = out["ssl_loss"] + 0.4 * out["pred_loss/rotation"] + 0.2 * out["pred_loss/hflip"]
    assert torch.allclose(out["loss"], manual)
    out["loss"].backward()
    for head in model.heads.values():
        assert head[0].weight.grad is not None and head[0].weight.grad.abs().sum() > 0


def test_sampled_prediction_draws_r_elements_per_crop(tmp_path):
    """samples: r predicts r drawn elements per crop instead of the whole orbit (24 for the jigsaw)."""
    make_image_folder(tmp_path / "data", {"train": 16, "test": 16})
    tasks = (
        "[{group: jigsaw, weight: 0.4, view: crop_only_small, head: small, samples: 2}, "
        "{group: rotation, weight: 0.4, view: crop_only_small, head: small}]"
    )
    cfg = load_config("mnist5k-simclr", overrides(tmp_path / "data") + [f"equivariance={tasks}"])
    assert [t.samples for t in cfg.equivariance] == [2, 0]
    trainer = Pretrainer(cfg, tmp_path / "unused", progress=False)
    _, _, predictions = trainer.make_inputs(trainer.train.images[:16])
    assert [p[0].shape[0] for p in predictions] == [2 * 16, 4 * 16]
    assert int(predictions[0][1].max()) < 24 and len(set(predictions[0][1].tolist())) > 4
    run = pretrain(cfg, tmp_path / "run", progress=False)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["pred_loss/jigsaw"]) and 0.0 <= row["pred_acc/jigsaw"] <= 1.0
