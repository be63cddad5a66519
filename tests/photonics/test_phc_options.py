"""Options of the official photonics code (rdangovs/essl ``photonics/``) and their essl counterparts: the ε-scaling
augmentation (``--scale``), the unshuffled pretraining loader, relative prediction (``relative_ee``), the l1/mse
prediction losses (``eeloss``), frozen-encoder fine-tuning (``--freeze_enc_ft``) and official encoder files.

Every expected value is computed here with plain numpy / torch code; data come from the ``root`` fixture
(conftest.py).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from essl.cli import main as essl_main
from essl.errors import EsslError
from essl.groups import make_group
from essl.models import make_backbone
from essl.objectives.equivariance import prediction_loss, relative_features
from essl.evaluation.photonics import FinetuneSettings, encoder_from_file, regressor
from essl.data.batches import TensorBatches
from essl.training.config import load_config
from essl.runs import read_metrics
from essl.training.pretrain import Pretrainer, pretrain

torch.set_num_threads(1)
FAST = ["backbone=phc_cnn_small", "batch_size=8", "epochs=1", "precision=fp32"]


# --------------------------------------------------------------------------------------------- ε scaling
def test_eps_scale_multiplies_each_cell_by_one_factor_inside_the_range():
    g = make_group("eps_scale")
    torch.manual_seed(0)
    eps = torch.rand(64, 1, 32, 32) * 9 + 2  # ε in [2, 11]
    eps[0] = 1.0 + 19.0 * (torch.arange(1024).view(1, 32, 32) % 2)  # spans 1..20: no factor fits
    x = (eps - 1) / 19
    out, s = g.sample(x)
    eps_out = out * 19 + 1
    ratio = eps_out / eps
    assert torch.allclose(ratio, s.view(-1, 1, 1, 1).expand_as(ratio), rtol=1e-5)  # one factor per cell
    low = 1 / eps.flatten(1).min(1).values
    high = torch.clamp(20 / eps.flatten(1).max(1).values, max=2.0)
    assert s[0] == 1 and torch.equal(out[0], x[0])  # empty interval: left unchanged
    assert ((s[1:] > low[1:]) & (s[1:] < high[1:])).all()
    assert eps_out[1:].min() > 1 and eps_out[1:].max() < 20
    # a homogeneous ε = 10 cell: the official rejection sampler gives s uniform on (0.1, 2)
    draws = g.sample(torch.full((20000, 1, 32, 32), 9 / 19))[1]
    assert draws.min() > 0.1 and draws.max() < 2
    assert abs(draws.mean().item() - 1.05) < 0.02 and abs(draws.std().item() - 1.9 / math.sqrt(12)) < 0.02
    with pytest.raises(EsslError, match="continuous"):
        g.orbit(x)


def test_eps_scale_leaves_the_dos_target_unchanged():
    """ε → sε: ω̃ = ω√ε_avg and DOS/√ε_avg are invariant (the label pipeline, cheap settings)."""
    from essl.photonics.dos import relative_l1
    from essl.photonics.label import LabelConfig, label_image

    img = np.full((32, 32), 2.0)
    img[8:20, 10:24] = 9.0
    cfg = LabelConfig(cutoff=5, nk=9)

    def target(image):
        lab = label_image(image, cfg)
        return torch.tensor(lab.dos[None, :400] / np.sqrt(lab.epsavg))

    base = target(img)
    assert float(relative_l1(target(1.7 * img), base)) < 1e-5
    assert float(relative_l1(target(0.9 * img + 0.5), base)) > 0.01  # not a scaling: the target changes


def test_eps_scale_is_an_invariance_only(root, tmp_path):
    d, _ = root
    cfg = load_config("phc-gpm-simclr", FAST + [f"data_root={d}", "invariances=roll,flip,eps_scale"])
    (row,) = read_metrics(pretrain(cfg, tmp_path / "run", progress=False))
    assert np.isfinite(row["loss"])
    with pytest.raises(EsslError, match="continuous"):
        load_config("phc-gpm-esimclr", ["equivariance=[{group: eps_scale, weight: 5.0, view: none, head: photonics}]"])


# --------------------------------------------------------------------------------------------- loader order
def test_unshuffled_batches_keep_the_file_order_every_epoch():
    images = torch.arange(10).view(10, 1, 1, 1)
    plain = TensorBatches(images, 4, seed=3, shuffle=False)
    for epoch in (0, 1, 5):
        assert [b.flatten().tolist() for b in plain.epoch(epoch)] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # drop_last
    shuffled = TensorBatches(images, 4, seed=3)
    assert [b.flatten().tolist() for b in shuffled.epoch(0)] != [[0, 1, 2, 3], [4, 5, 6, 7]]
    # two processes share the same global batches
    ranks = [TensorBatches(images, 4, 3, r, 2, shuffle=False) for r in (0, 1)]
    assert [torch.cat([a, b]).flatten().tolist() for a, b in zip(*(r.epoch(1) for r in ranks))] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    for family in ("gpm", "blob"):  # the photonics presets follow the official loader
        for method in ("simclr", "simclr-transform", "esimclr"):
            assert load_config(f"phc-{family}-{method}").shuffle is False
    assert load_config("mnist5k-simclr").shuffle is True


# --------------------------------------------------------------------------------------------- prediction options
def test_regressed_index_losses_match_plain_formulas():
    out = torch.tensor([[0.2], [2.4], [1.4], [3.9]])
    g = torch.tensor([0, 3, 1, 3])
    l1, acc = prediction_loss(out, g, "l1", order=4)
    mse, _ = prediction_loss(out, g, "mse", order=4)
    diff = out.flatten() - g.float()
    assert l1.item() == pytest.approx(diff.abs().mean().item())
    assert mse.item() == pytest.approx((diff**2).mean().item())
    assert acc.item() == pytest.approx(3 / 4)  # rounded: 0, 2 (wrong), 1, 4 clamped to 3
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    xent, acc = prediction_loss(logits, labels)
    assert xent.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert acc.item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_relative_features_pair_each_copy_with_its_reference():
    n, d, k = 3, 2, 4
    ref = torch.arange(n * d, dtype=torch.float).view(n, d)
    moved = 100 + torch.arange(k * n * d, dtype=torch.float).view(k * n, d)
    z = relative_features(torch.cat([ref, moved]), k * n)
    assert z.shape == (k * n, 2 * d)
    for row in range(k * n):
        assert torch.equal(z[row], torch.cat([ref[row % n], moved[row]]))


def test_relative_prediction_inputs_are_reference_then_its_orbit(root):
    d, _ = root
    cfg = load_config(
        "phc-gpm-esimclr",
        FAST
        + [
            f"data_root={d}",
            "equivariance=[{group: rotation, weight: 5.0, view: none, head: photonics, relative: true}]",
        ],
    )
    trainer = Pretrainer(cfg, d / "unused", progress=False)
    x = next(iter(trainer.batches.epoch(0)))
    _, _, [(xg, g)] = trainer.make_inputs(x)
    n = x.shape[0]
    ref, orbit = xg[:n], xg[n:]
    assert g.tolist() == [k for k in range(4) for _ in range(n)]
    for k in range(4):
        assert torch.equal(orbit[k * n : (k + 1) * n], torch.rot90(ref, k, dims=(2, 3)))
    # the reference is a rotated copy of the cell (a uniformly drawn element), not always the cell itself
    assert any(not torch.equal(ref[i], x[i]) for i in range(n))
    head = trainer.model.heads["rotation"]
    assert head[0].in_features == 2 * trainer.model.backbone.feature_dim and head[-1].out_features == 4


@pytest.mark.parametrize("options,outputs", [("relative: true", 4), ("loss: mse", 1), ("loss: l1", 1)])
def test_prediction_options_pretrain(root, tmp_path, options, outputs):
    d, _ = root
    task = f"equivariance=[{{group: translation, weight: 5.0, view: none, head: photonics, {options}}}]"
    cfg = load_config("phc-blob-esimclr", FAST + [f"data_root={d}", task])
    run = pretrain(cfg, tmp_path / "run", progress=False)
    (row,) = read_metrics(run)
    assert np.isclose(row["loss"], row["ssl_loss"] + 5.0 * row["pred_loss/translation"], rtol=1e-4)
    assert 0 <= row["pred_acc/translation"] <= 1
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert state["heads.translation.6.weight"].shape[0] == outputs
    with pytest.raises(EsslError, match="equivariance .translation.: loss must be one of"):
        load_config("phc-blob-esimclr", [task.replace(options, "loss: hinge")])


# --------------------------------------------------------------------------------------------- fine-tuning options
def test_frozen_encoder_trains_the_head_only():
    torch.manual_seed(0)
    enc = make_backbone("phc_cnn_small", 1)
    model, opt = regressor(enc, FinetuneSettings(freeze_encoder=True))
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.head.parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        loss = model(torch.rand(8, 1, 32, 32)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("encoder.") and ("running_" in key or "num_batches" in key):
            assert not torch.equal(after[key], value), key  # official: BN statistics still follow the batches
        elif key.startswith("encoder."):
            assert torch.equal(after[key], value), key
        else:
            assert not torch.equal(after[key], value), key
    model, opt = regressor(enc, FinetuneSettings())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_freeze_encoder_flag_writes_its_own_result(root, tmp_path):
    d, _ = root
    run = pretrain(load_config("phc-gpm-simclr", FAST + [f"data_root={d}"]), tmp_path / "run", progress=False)
    argv = ["phc", "finetune", str(run), "--epochs", "1", "--n-train", "8", "--seeds", "1", "--freeze-encoder"]
    argv += ["--protocol", "last"]
    assert essl_main(argv) == 0
    res = json.loads((run / "eval" / "phc-finetune-n8-e1-frozen.json").read_text())
    assert res["protocol"]["freeze_encoder"] is True and "frozen" in res["protocol"]["description"]


# --------------------------------------------------------------------------------------------- official files
class OfficialEncoder(nn.Module):
    """The layer layout of the official ``Encoder`` (photonics/phc_models.py), built here independently."""

    def __init__(self, lv=(64, 256, 256, 1024, 1024), ks=7):
        super().__init__()
        pad = math.ceil((ks - 1) / 2)
        self.enc_block2d = nn.Sequential(
            nn.Conv2d(1, lv[0], ks, 1, pad),
            nn.BatchNorm2d(lv[0]),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(lv[0], lv[1], ks, 1, pad),
            nn.BatchNorm2d(lv[1]),
            nn.ReLU(),
            nn.MaxPool2d(4, 4),
            nn.Conv2d(lv[1], lv[2], ks, 1, pad),
            nn.BatchNorm2d(lv[2]),
            nn.ReLU(),
            nn.MaxPool2d(4, 4),
        )
        self.fcpart = nn.Sequential(nn.Linear(lv[2], lv[3]), nn.ReLU(), nn.Linear(lv[3], lv[4]))
        self.lv = lv

    def forward(self, x):
        return self.fcpart(self.enc_block2d(x).view(-1, self.lv[2]))


class OfficialEnc(nn.Module):  # the official ``Enc`` wrapper: keys enc.enc_block2d.*, enc.fcpart.*
    def __init__(self, lv):
        super().__init__()
        self.enc = OfficialEncoder(lv)


def _randomised(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics, so eval mode is checked too
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return module.eval()


@pytest.mark.parametrize("lv", [(64, 256, 256, 1024, 1024), (16, 64, 64, 1024, 1024)])
def test_official_encoder_files_load_with_the_same_outputs(tmp_path, lv):
    official = _randomised(OfficialEnc(lv))
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        expected = official.enc(x)
    layouts = {  # the EP100/EP200 file of pretrain_model, a whole SimCLRwEE model, the fine-tuning Net
        "pretrain": {"model_state_dict": official.state_dict(), "ptepoch": 100},
        "simclr": {f"encoder.{k}": v for k, v in official.state_dict().items()} | {"projector.w": torch.zeros(1)},
        "net": official.state_dict() | {"predictor.DOSband.0.weight": torch.zeros(2, 2)},
    }
    for name, content in layouts.items():
        path = tmp_path / f"{name}.pt"
        torch.save(content, path)
        src = encoder_from_file(path, "gpm", tmp_path / "out")
        assert [m.out_channels for m in src.encoder.features if isinstance(m, nn.Conv2d)] == list(lv[:3])
        with torch.no_grad():
            assert torch.allclose(src.encoder.eval()(x), expected, atol=1e-5), name
        assert "official" in src.source["layout"] and src.invariances == ["roll", "flip"]
    assert (
        src.checkpoint["epoch"] is None
        and encoder_from_file(tmp_path / "pretrain.pt", "blob", tmp_path).checkpoint["epoch"] == 100
    )


def test_official_encoder_file_fine_tunes_from_the_command_line(root, tmp_path):
    d, _ = root
    path = tmp_path / "EP200bscl256_temp0.1_ptlr0.001"
    torch.save(
        {"model_state_dict": _randomised(OfficialEnc((16, 64, 64, 1024, 1024))).state_dict(), "ptepoch": 200}, path
    )
    argv = [
        "phc",
        "finetune",
        "--backbone-file",
        str(path),
        "--family",
        "blob",
        "--data-root",
        str(d),
        "--out",
        str(tmp_path / "out"),
        "--epochs",
        "1",
        "--n-train",
        "8",
        "--seeds",
        "1",
    ]
    assert essl_main(argv) == 0
    res = json.loads((tmp_path / "out" / "eval" / "phc-finetune-n8-e1.json").read_text())
    assert res["source"]["kind"] == "file" and res["checkpoint"]["epoch"] == 200
    assert res["protocol"]["invariances"] == ["flip", "rotation"]
    # bad files and combinations
    torch.save({"model_state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(EsslError, match="no photonics encoder weights"):
        encoder_from_file(tmp_path / "other.pt", "gpm", tmp_path)
    assert essl_main(argv[:2] + ["--scratch"] + argv[2:]) == 2  # two encoders named
    assert essl_main(argv[:-6]) == 2  # no --out ... : refused before any work


def test_official_encoder_file_warm_starts_pretraining(root, tmp_path, capsys):
    """init_from= takes an official EP file (photonics/main.py pretrain_model) through essl.models.layouts."""
    d, _ = root
    official = _randomised(OfficialEnc((16, 64, 64, 1024, 1024)))
    path = tmp_path / "EP100bscl256_temp0.1_ptlr0.001"
    torch.save({"model_state_dict": official.state_dict(), "ptepoch": 100}, path)
    cfg = load_config("phc-gpm-esimclr", FAST + [f"data_root={d}", f"init_from={path}"])
    trainer = Pretrainer(cfg, tmp_path / "unused", progress=False)
    assert trainer.warm_start(str(path))["loaded"] == ["backbone"]
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trainer.model.backbone.eval()(x), official.enc(x), atol=1e-5)
    run = pretrain(cfg, tmp_path / "run", progress=False)  # end to end
    assert "init_from" in capsys.readouterr().err and (run / "checkpoint.pt").is_file()
    with pytest.raises(EsslError, match="does not fit"):  # the paper's widths, not phc_cnn_small's
        pretrain(
            load_config("phc-gpm-esimclr", [f"data_root={d}", f"init_from={path}", "batch_size=8"]),
            tmp_path / "x",
            False,
        )
    assert not (tmp_path / "x").exists()
