"""Probes and fine-tuning: chance on random features, ~100% on label-revealing ones; protocol bookkeeping."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from essl.data import ImageData
from essl.errors import EsslError
from essl.evaluation.classifier import center_view, train_classifier
from essl.evaluation.evaluate import evaluate_linear_lbfgs, evaluate_protocol
from essl.evaluation.linear import fit_logistic_regression, linear_probe_accuracy
from essl.evaluation.loading import EvalTarget
from essl.evaluation.catalog import PROTOCOLS
from essl.evaluation.protocols import (
    adapt_protocol,
    get_protocol,
    lr_schedule,
    result_name,
    stratified_subset,
)
from essl.models import SmallCNN

MEAN, STD = (0.5,), (0.25,)
LEVELS = [40, 80, 120, 160, 200]  # grey level of each class (uint8)


def level_images(n_per_class, seed, size=8):
    """Noisy constant images; class c has grey level LEVELS[c]. Crops, flips and resizes keep the level."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(LEVELS)).repeat_interleave(n_per_class)
    base = torch.tensor(LEVELS)[labels].view(-1, 1, 1, 1).float()
    images = (base + torch.randint(-6, 7, (len(labels), 1, size, size), generator=g)).clamp(0, 255).to(torch.uint8)
    return ImageData(images, labels, len(LEVELS), MEAN, STD, f"levels-{seed}")


class LevelRBF(nn.Module):
    """Reveals the label: RBF features of the mean (normalised) grey level around each class level."""

    feature_dim = len(LEVELS)

    def __init__(self):
        super().__init__()
        self.register_buffer("centres", (torch.tensor(LEVELS) / 255 - MEAN[0]) / STD[0])

    def forward(self, x):
        m = x.float().mean((1, 2, 3))
        return torch.exp(-((m[:, None] - self.centres) ** 2) / (2 * 0.15**2))


class Noise(nn.Module):
    """Random features: fresh Gaussian noise, whatever the input."""

    feature_dim = 16

    def forward(self, x):
        return torch.randn(len(x), 16)


def tiny(protocol="cifar", **kw):
    used, _ = adapt_protocol(get_protocol(protocol), "synthetic", 8, **kw)
    return used


def test_paper_probe_is_near_100_on_label_revealing_and_chance_on_random_features():
    train, test = level_images(40, 0), level_images(40, 1)
    good = train_classifier(LevelRBF(), train, test, tiny(epochs=2, batch_size=64), seed=0)
    assert good["top1"] >= 97.0 and good["top1"] == good["top1_final"]
    bad = train_classifier(Noise(), train, test, tiny(epochs=2, batch_size=64), seed=0)
    assert abs(bad["top1"] - 20.0) < 12.0  # chance is 1/5; 200 test images


def test_lbfgs_probe_chance_and_label_revealing():
    g = torch.Generator().manual_seed(0)
    y_train, y_test = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    rand_train, rand_test = torch.randn(1000, 32, generator=g), torch.randn(1000, 32, generator=g)
    assert abs(linear_probe_accuracy(rand_train, y_train, rand_test, y_test, 10) - 10.0) < 4.0
    reveal = lambda y: nn.functional.one_hot(y, 10).float() + 0.1 * torch.randn(len(y), 10, generator=g)  # noqa: E731
    assert linear_probe_accuracy(reveal(y_train), y_train, reveal(y_test), y_test, 10) > 99.0


def test_lbfgs_in_blocks_equals_the_fit_in_memory(tmp_path):
    """Reading float16 features from a memmap in blocks of 7 rows fits the same classifier as holding them all,
    with a row subset too; standardisation equals torch's mean and unbiased std."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 12, generator=g).half(), torch.randint(0, 4, (300,), generator=g)
    disk = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=(300, 12))
    disk[:] = x.numpy()
    whole = fit_logistic_regression(x.float(), y, 4)
    blocks = fit_logistic_regression(disk, y, 4, chunk_bytes=7 * 12 * 8)
    for a, b in zip(whole, blocks, strict=True):
        assert torch.allclose(a, b, atol=1e-9)
    assert torch.allclose(whole[2], x.double().mean(0)) and torch.allclose(whole[3], x.double().std(0))
    rows = np.array([5, 17, 3, 250, 99, 42, 7, 8, 9, 120, 200, 201])
    subset = fit_logistic_regression(x[rows].float(), y[rows], 4)
    picked = fit_logistic_regression(disk, y[rows], 4, rows=rows, chunk_bytes=5 * 12 * 8)
    for a, b in zip(subset, picked, strict=True):
        assert torch.allclose(a, b, atol=1e-9)


def test_probe_leaves_frozen_backbone_untouched_in_eval_mode():
    backbone = SmallCNN(1, widths=(4, 8))
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    train_classifier(backbone, level_images(10, 0), level_images(4, 1), tiny(epochs=1, batch_size=16))
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running statistics
    assert backbone.training  # not even its mode changes: the probe works on a copy
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(backbone, level_images(4, 0), level_images(2, 1), tiny(epochs=1, batch_size=8), seed=5)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is left as it was


MODES = []


class ModeSpy(LevelRBF):
    """Records whether it runs in train mode and with gradients."""

    def forward(self, x):
        MODES.append((self.training, torch.is_grad_enabled()))
        return super().forward(x)


def test_probe_runs_backbone_in_eval_mode_without_gradients():
    MODES.clear()
    spy = ModeSpy().train()
    train_classifier(spy, level_images(10, 0), level_images(4, 1), tiny(epochs=1, batch_size=16))
    assert MODES and set(MODES) == {(False, False)}
    MODES.clear()
    ft = dataclasses.replace(tiny(epochs=1, batch_size=16), backbone_lr=0.1)
    train_classifier(spy, level_images(10, 0), level_images(4, 1), ft)
    assert (True, True) in MODES and (False, False) in MODES  # fine-tuning trains in train mode; tests in eval


class ZeroLinear(nn.Module):
    """A backbone that starts useless (all-zero features) but can learn: Linear(pixels → 8), zero-initialised."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 8)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return self.fc(x.flatten(1))


def quadrant_images(n_per_class, seed, size=8):
    """4 classes: the bright quadrant of a noisy image (linearly separable in pixel space)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(n_per_class)
    images = torch.randint(0, 60, (len(labels), 1, size, size), generator=g, dtype=torch.uint8)
    h = size // 2
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 2)
        images[i, :, r * h : (r + 1) * h, q * h : (q + 1) * h] += 150
    return ImageData(images, labels, 4, MEAN, STD, f"quadrants-{seed}")


def test_finetuning_trains_a_copy_of_the_backbone():
    train, test = quadrant_images(40, 0), quadrant_images(20, 1)
    backbone = ZeroLinear()
    ft = dataclasses.replace(
        get_protocol("bt_finetune"),
        lr=0.5,
        backbone_lr=0.5,
        epochs=10,
        batch_size=32,
        crop_scale=(0.6, 1.0),
        hflip=False,
    )
    probe = dataclasses.replace(ft, backbone_lr=None)
    frozen = train_classifier(backbone, train, test, probe)
    tuned = train_classifier(backbone, train, test, ft)
    assert frozen["top1"] <= 30.0  # zero features: one class for everything
    assert tuned["top1"] >= 90.0
    assert torch.count_nonzero(backbone.fc.weight) == 0  # the original is untouched


def test_schedules_match_the_official_formulas():
    # cifar: adjust_learning_rate(epochs, warmup 0, base_lr, step) of rdangovs/essl cifar10/main.py
    p = tiny("cifar", epochs=3)
    steps = 7
    official = [0.5 * (1 + math.cos(math.pi * s / (3 * steps))) for s in range(3 * steps)]
    assert lr_schedule(p, steps) == pytest.approx(official)
    # imagenet_bt: CosineAnnealingLR(optimizer, epochs), stepped once per epoch
    p = tiny("imagenet_bt", epochs=5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 5)
    per_epoch = []
    for _ in range(5):
        per_epoch.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lr_schedule(p, 3) == pytest.approx([f for f in per_epoch for _ in range(3)])
    assert set(lr_schedule(tiny("imagenet_simclr", epochs=4), 2)) == {1.0}  # never-stepped scheduler


def test_protocol_adaptation_is_recorded():
    mnist, rec = adapt_protocol(PROTOCOLS["cifar"], "mnist5k", 28)
    assert (mnist.hflip, rec["adapted"]["crop"]["used"], rec["adapted"]["test_resize"]["used"]) == (False, 28, 32)
    assert "hflip" in rec["adapted"] and rec["overrides"] == {}
    cifar, rec = adapt_protocol(PROTOCOLS["cifar"], "cifar10", 32, epochs=2)
    assert cifar.hflip and rec["adapted"]["test_resize"]["used"] == 36 and cifar.epochs == 2
    assert rec["overrides"]["epochs"] == {"protocol": 100, "used": 2, "why": "user override"}
    imnet, rec = adapt_protocol(PROTOCOLS["imagenet_simsiam"], "folder", 224, n_train=100)
    assert rec["adapted"]["test_resize"]["used"] == 256 and imnet.batch_size == 100
    assert rec["adapted"]["batch_size"]["protocol"] == 4096
    assert result_name("probe-cifar", {"overrides": {"epochs": {"used": 2}}}, 0.01) == "probe-cifar-epochs2-labels1pct"
    with pytest.raises(EsslError, match="Unknown evaluation protocol"):
        get_protocol("cifar100")
    with pytest.raises(EsslError, match="--epochs must be a whole number >= 1"):
        adapt_protocol(PROTOCOLS["cifar"], "cifar10", 32, epochs=0)


def test_stratified_subset():
    labels = torch.cat([torch.zeros(300), torch.ones(100), torch.full((50,), 2)]).long()
    idx = stratified_subset(labels, 0.1, seed=3)
    assert labels[idx].bincount().tolist() == [30, 10, 5]
    assert torch.equal(idx, stratified_subset(labels, 0.1, seed=3))
    assert not torch.equal(idx, stratified_subset(labels, 0.1, seed=4))
    assert labels[stratified_subset(labels, 0.001)].bincount().tolist() == [1, 1, 1]  # at least one per class
    for bad in (0, -0.5, 1.5):
        with pytest.raises(EsslError, match="label-fraction"):
            stratified_subset(labels, bad)


def test_center_view_is_centred_and_keeps_constants():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 1, 32, 32), generator=g, dtype=torch.uint8)
    out = center_view(x, 36, 32)
    assert out.shape == (3, 1, 32, 32) and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(center_view(x.flip(-1), 36, 32), out.flip(-1))  # centred: commutes with flips
    torch.testing.assert_close(center_view(x.flip(-2), 36, 32), out.flip(-2))
    const = torch.full((1, 1, 28, 28), 77, dtype=torch.uint8)
    torch.testing.assert_close(center_view(const, 32, 28), torch.full((1, 1, 28, 28), 77 / 255))
    torch.testing.assert_close(center_view(x, 32, 32), x.float() / 255)


def _target(tmp_path, backbone):
    return EvalTarget(
        backbone,
        level_images(20, 0),
        level_images(10, 1),
        tmp_path / "out",
        {"path": "none", "epoch": 1, "sha256": "0"},
        {"kind": "run", "dataset": "synthetic"},
        {"pretrain": 0},
    )


def test_tiny_paper_protocol_writes_its_result(tmp_path):
    r = evaluate_protocol(
        _target(tmp_path, LevelRBF()),
        "cifar",
        epochs=2,
        repeats=2,
        batch_size=32,
        label_fraction=0.5,
        device="cpu",
        precision="fp32",
    )
    path = tmp_path / "out" / "eval" / "probe-cifar-batchsize32-epochs2-repeats2-labels50pct.json"
    saved = json.loads(path.read_text())
    assert saved["top1"] == r["top1"] and len(saved["runs"]) == 2 and saved["top1"] > 90
    assert saved["evaluation"] == "linear_probe" and saved["protocol"]["name"] == "cifar"
    assert saved["protocol"]["departs_from_protocol"] and saved["protocol"]["epochs"] == 100
    assert saved["protocol"]["used"]["epochs"] == 2 and saved["protocol"]["overrides"]["repeats"]["used"] == 2
    assert saved["data"]["train_images_used"] == 50 and saved["data"]["label_fraction"] == 0.5
    assert saved["seeds"] == {"pretrain": 0, "probe_runs": [0, 1], "label_subset": 0}
    assert saved["precision"] == "fp32" and saved["checkpoint_info"]["epoch"] == 1
    std = torch.tensor([run["top1"] for run in saved["runs"]], dtype=torch.float64).std(unbiased=False).item()
    assert saved["top1_std"] == pytest.approx(std)


def test_lbfgs_result_is_named_and_few_label(tmp_path):
    r = evaluate_linear_lbfgs(_target(tmp_path, LevelRBF()), label_fraction=0.1, seed=2)
    # the label subset's seed (not the default 0) is part of the name: it never replaces the seed-0 result
    saved = json.loads((tmp_path / "out" / "eval" / "linear_lbfgs-seed2-labels10pct.json").read_text())
    assert saved["protocol"]["name"] == "linear_lbfgs" and saved["protocol"]["paper_protocol"] is False
    assert saved["data"]["train_images_used"] == 10 and saved["seeds"]["label_subset"] == 2
    assert r["top1"] == saved["top1"] > 90


def test_a_result_with_other_settings_never_replaces_the_default_one(tmp_path):
    """`essl probe RUN --weight-decay 5` gets its own file and its own report row; the default result stays."""
    from essl.evaluation.results import protocol_label

    target = _target(tmp_path, LevelRBF())
    evaluate_linear_lbfgs(target)
    default = tmp_path / "out" / "eval" / "linear_lbfgs.json"
    before = default.read_bytes()
    evaluate_linear_lbfgs(target, weight_decay=5.0)
    other = json.loads((tmp_path / "out" / "eval" / "linear_lbfgs-weightdecay5.json").read_text())
    assert default.read_bytes() == before and other["protocol"]["weight_decay"] == 5.0
    assert protocol_label(other) != protocol_label(json.loads(before)) and "weight decay 5.0" in protocol_label(other)


@pytest.mark.parametrize("name", ["cifar", "imagenet_simclr", "imagenet_bt", "imagenet_simsiam", "bt_finetune"])
def test_every_protocol_runs(name):
    protocol = tiny(name, epochs=2, batch_size=50 if name == "imagenet_simsiam" else 32)
    backbone = SmallCNN(1, widths=(4, 8)) if name == "bt_finetune" else LevelRBF()
    r = train_classifier(backbone, level_images(20, 0), level_images(10, 1), protocol, seed=1)
    assert len(r["test_curve"]) == (2 if protocol.select == "best" else 1)
    assert r["top1"] == (r["top1_best"] if protocol.select == "best" else r["top1_final"])
    assert all(math.isfinite(v) for v in r["loss_curve"])
    # LARS (imagenet_simsiam) moves each weight by ~lr·0.001·‖w‖ per step: 4 steps learn nothing, as intended
    if name not in ("bt_finetune", "imagenet_simsiam"):
        assert r["top1"] >= 60.0  # the label-revealing features are learnt by the SGD protocols


def test_simsiam_probe_uses_lars_like_apex_larc():
    from essl.evaluation.classifier import make_linear, make_optimizer

    torch.manual_seed(0)
    protocol = get_protocol("imagenet_simsiam")
    layer = make_linear(16, 4, protocol.init)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    opt = make_optimizer(protocol, layer, None)
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    nn.functional.cross_entropy(layer(x), y).backward()
    gw, gb = layer.weight.grad.clone(), layer.bias.grad.clone()
    opt.step()
    # apex LARC(trust 0.001, clip=False), wd 0: grad *= 0.001·‖w‖/‖g‖ where ‖w‖ > 0; then SGD at lr 1.6
    torch.testing.assert_close(layer.weight.detach(), w0 - 1.6 * 0.001 * w0.norm() / gw.norm() * gw)
    torch.testing.assert_close(layer.bias.detach(), b0 - 1.6 * gb)  # zero bias: no adaptation on the first step
    assert float(w0.std()) == pytest.approx(0.01, rel=0.3) and torch.count_nonzero(b0) == 0
