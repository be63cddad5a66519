"""The ML side of the photonics experiment: encoder and shared-BN heads, periodic groups, the phc-* datasets and
presets, the fine-tuning protocol and metric, the experiment driver, and bad inputs.

Data are tiny synthetic h5 files written here with h5py in the original E-SSL layout (one dataset per sample,
1-based string indices); every expected value is computed here with plain numpy / torch code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from essl.cli import main as essl_main
from essl.data import load_dataset
from essl.errors import EsslError
from essl.groups import make_group
from essl.models import make_backbone, prediction_head, projector
from essl.evaluation.photonics import (
    DOSRegressor,
    FinetuneSettings,
    dos_error,
    encoder_from_run,
    encoder_from_scratch,
    finetune,
    finetune_official,
    official_milestones,
)
from essl.data.photonics import load_labelled_splits
from essl.training.config import load_config
from essl.runs import read_config, read_metrics
from essl.training.pretrain import pretrain

torch.set_num_threads(1)

W = np.linspace(0, 1.2, 500)
EL = 2 * np.pi * W[:400]
N_UL, N_POOL, N_TEST = 16, 24, 8  # sizes of the `root` fixture's files (conftest.py)
FAST = ["backbone=phc_cnn_small", "batch_size=8", "epochs=1", "precision=fp32"]


# --------------------------------------------------------------------------------------------- models
def test_encoder_reaches_one_pixel_and_gives_1024_features():
    for name, width in (("phc_cnn", 256), ("phc_cnn_small", 64)):
        enc = make_backbone(name, 1)
        x = torch.rand(3, 1, 32, 32)
        assert enc.features(x).shape == (3, width, 1, 1), name
        assert enc(x).shape == (3, 1024) and enc.feature_dim == 1024
    convs = [m for m in make_backbone("phc_cnn", 1).modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 64, (7, 7), (3, 3)),
        (64, 256, (7, 7), (3, 3)),
        (256, 256, (7, 7), (3, 3)),
    ]
    with pytest.raises(EsslError, match="32×32"):
        make_backbone("phc_cnn", 1)(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("kind,out", [("projector", 256), ("head", 4)])
def test_photonics_heads_share_one_batchnorm(kind, out):
    torch.manual_seed(0)
    h = projector("photonics", 1024) if kind == "projector" else prediction_head("photonics", 1024, 4)
    linears = [m for m in h if isinstance(m, nn.Linear)]
    norms = [m for m in h if isinstance(m, nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 512), (512, out)]
    assert len(norms) == 2 and norms[0] is norms[1], "both hidden layers must use the same BN instance"
    assert len(list(h.parameters())) == 3 * 2 + 2  # three biased linears and one BN's weight and bias
    bn = norms[0]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(16, 1024)
    # training mode: both layers normalise with their own batch statistics and the one BN's affine parameters
    h.train()
    mean0 = bn.running_mean.clone()

    def bn_train(t):
        return (t - t.mean(0)) / torch.sqrt(t.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias

    a1 = linears[0](x)
    a2 = linears[1](torch.relu(bn_train(a1)))
    ref = linears[2](torch.relu(bn_train(a2)))
    assert torch.allclose(h(x), ref, atol=1e-4)
    # the shared running mean was updated twice: m ← 0.9·(0.9·m + 0.1·μ1) + 0.1·μ2
    expect = 0.9 * (0.9 * mean0 + 0.1 * a1.mean(0).detach()) + 0.1 * a2.mean(0).detach()
    assert torch.allclose(bn.running_mean, expect, atol=1e-5)
    assert bn.num_batches_tracked.item() == 2


# --------------------------------------------------------------------------------------------- groups
def test_roll_is_every_cyclic_shift_and_acts_per_sample():
    g = make_group("roll")
    assert g.order == 1024
    x = torch.rand(5, 1, 32, 32)
    for k in (0, 1, 31, 32, 33, 517, 1023):
        assert np.array_equal(g.apply(x, k).numpy(), np.roll(x.numpy(), (k // 32, k % 32), axis=(2, 3))), k
    ks = torch.tensor([0, 5, 40, 1023, 600])
    out = g.act(x, ks)
    for i, k in enumerate(ks.tolist()):
        assert np.array_equal(out[i].numpy(), np.roll(x[i].numpy(), (k // 32, k % 32), axis=(1, 2))), k
    for a, b in ((3, 70), (1000, 900), (31, 1)):
        assert torch.equal(g.apply(g.apply(x, b), a), g.apply(x, g.compose(a, b)))
        assert torch.equal(g.apply(g.apply(x, a), g.inverse(a)), x)
    with pytest.raises(EsslError, match="32×32"):
        g.sample(torch.rand(2, 1, 28, 28))


def test_flip_draws_identity_hflip_or_vflip():
    g = make_group("flip")
    x = torch.rand(3000, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y, k = g.sample(x, generator=torch.Generator().manual_seed(1))
    refs = [x, x.flip(-1), x.flip(-2)]
    for e in range(3):
        assert torch.equal(y[k == e], refs[e][k == e])
    counts = np.bincount(k.numpy(), minlength=3)
    assert counts.min() > 900 and counts.sum() == 3000  # each of the three about 1/3
    with pytest.raises(EsslError, match="not a group"):
        g.compose(1, 2)


# --------------------------------------------------------------------------------------------- datasets, presets
def test_phc_dataset_is_float_cells_scaled_to_unit_interval(root):
    d, files = root
    data = load_dataset("phc-gpm", "train", str(d))
    ref = np.stack([files["ul_gpm"][i][0] for i in range(1, N_UL + 1)])[:, None]
    assert data.images.dtype == torch.float32 and data.images.shape == (N_UL, 1, 32, 32)
    assert np.allclose(data.images.numpy(), (ref - 1) / 19, atol=1e-6)
    assert data.labels is None and data.mean == (0.0,) and data.std == (1.0,)
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    with pytest.raises(EsslError, match="no class labels"):
        load_dataset("phc-blob", "test", str(d))


@pytest.mark.parametrize("family", ["gpm", "blob"])
@pytest.mark.parametrize("method", ["simclr", "simclr-transform", "esimclr"])
def test_every_preset_pretrains_on_tiny_cells(root, tmp_path, family, method):
    d, _ = root
    cfg = load_config(f"phc-{family}-{method}", FAST + [f"data_root={d}"])
    assert cfg.full_nt_xent and cfg.temperature == 0.1 and cfg.views == ["none", "none"] and cfg.knn_every == 0
    assert cfg.lr == 1e-3 and cfg.weight_decay == 0 and cfg.warmup_epochs == 0 and cfg.seed == 1
    run = pretrain(cfg, tmp_path / "run", progress=False)
    (row,) = read_metrics(run)
    assert np.isfinite(row["loss"]) and "knn_top1" not in row and row["step"] == N_UL // 8
    if method == "esimclr":
        group = "rotation" if family == "gpm" else "translation"
        assert cfg.equivariance[0].weight == 5.0 and f"pred_loss/{group}" in row
        assert np.isclose(row["loss"], row["ssl_loss"] + 5.0 * row[f"pred_loss/{group}"], rtol=1e-4)
    base = {"gpm": ["roll", "flip"], "blob": ["flip", "rotation"]}[family]
    extra = {"gpm": "rotation", "blob": "translation"}[family]
    assert set(cfg.invariances) == set(base + ([extra] if method == "simclr-transform" else []))


def test_knn_monitor_is_skipped_without_labels(root, tmp_path):
    d, _ = root
    cfg = load_config("phc-gpm-simclr", FAST + [f"data_root={d}", "knn_every=1"])
    (row,) = read_metrics(pretrain(cfg, tmp_path / "run", progress=False))
    assert "knn_top1" not in row


# --------------------------------------------------------------------------------------------- fine-tuning
class Fixed(nn.Module):
    """Returns a given prediction of y − EL for each input cell (looked up by the cell's first pixel)."""

    def __init__(self, x: torch.Tensor, out: torch.Tensor):
        super().__init__()
        self.keys, self.out = x[:, 0, 0, 0], out
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        idx = [int(torch.nonzero(self.keys == v)[0]) for v in x[:, 0, 0, 0]]
        return self.out[idx] + 0 * self.p


def test_dos_error_matches_a_plain_computation(root):
    d, files = root
    splits = load_labelled_splits("blob", d, 10)
    test = splits.test
    # the loader's target: y = DOS[:400] / sqrt(epsavg), EL = 2π w[:400]
    y_ref = np.stack([files["blob_test"][i][2][:400] / np.sqrt(files["blob_test"][i][1]) for i in range(1, N_TEST + 1)])
    assert np.allclose(test.y.numpy(), y_ref, rtol=1e-5) and np.allclose(test.el.numpy(), EL, atol=1e-5)
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(N_TEST, 400)).astype(np.float32)
    model = Fixed(test.x, torch.from_numpy(pred))
    got = dos_error(model, test.x, test.y, test.el, batch=3)
    y_hat = pred + EL
    ref = np.mean([np.abs(y_hat[n, 100:] - y_ref[n, 100:]).sum() / np.abs(y_ref[n, 100:]).sum() for n in range(N_TEST)])
    assert got == pytest.approx(ref, rel=1e-5)
    # a perfect prediction of y − EL scores 0
    assert dos_error(Fixed(test.x, test.y - test.el), test.x, test.y, test.el) == pytest.approx(0, abs=1e-6)


def test_labelled_subset_is_drawn_once_with_seed_1(root):
    d, _ = root
    s = load_labelled_splits("gpm", d, 10, subset_seed=1)
    assert s.train.indices.tolist() == np.random.RandomState(1).choice(np.arange(1, N_POOL + 1), 10, False).tolist()
    assert s.test.indices.tolist() == list(range(7801, 7801 + N_TEST))
    with pytest.raises(EsslError, match="fewer than --n-train"):
        load_labelled_splits("gpm", d, N_POOL + 1)


def test_finetune_runs_end_to_end_and_writes_its_result(root, tmp_path):
    d, _ = root
    run = pretrain(load_config("phc-blob-esimclr", FAST + [f"data_root={d}"]), tmp_path / "run", progress=False)
    argv = ["phc", "finetune", str(run), "--epochs", "2", "--n-train", "12", "--seeds", "1", "2", "--protocol", "last"]
    assert essl_main(argv) == 0  # data_root comes from the run
    path = run / "eval" / "phc-finetune-n12-e2.json"
    res = json.loads(path.read_text())
    assert "selection" not in res  # --protocol last: the one-checkpoint result as before the official protocol
    assert res["family"] == "blob" and res["checkpoint"]["epoch"] == 1 and len(res["checkpoint"]["sha256"]) == 64
    assert res["protocol"]["invariances"] == ["flip", "rotation"] and res["seeds"]["finetune"] == [1, 2]
    assert res["data"]["n_train"] == 12 and res["data"]["n_test"] == N_TEST
    for r in res["per_seed"]:
        # the official evaluation points: the starts of epochs 1..E; the error after the last epoch apart
        assert len(r["curve"]) == 3 and r["min_error"] == min(r["curve"][:2]) and r["final_error"] == r["curve"][-1]
        assert r["curve"][r["min_after_epochs"]] == r["min_error"]
    mins = np.array([r["min_error"] for r in res["per_seed"]])
    assert res["summary"]["mean"] == pytest.approx(mins.mean()) and res["summary"]["std"] == pytest.approx(mins.std())
    assert res["per_seed"][0]["curve"] != res["per_seed"][1]["curve"]  # seeds differ
    # curve[0] is the untrained model: the pretrained encoder with a fresh head (seed 1) on the test set
    src = encoder_from_run(run)
    torch.manual_seed(1)
    np.random.seed(1)
    from essl.models.photonics import dos_head

    model = DOSRegressor(src.encoder, dos_head(1024))
    splits = load_labelled_splits("blob", d, 12)
    assert res["per_seed"][0]["curve"][0] == pytest.approx(
        dos_error(model, splits.test.x, splits.test.y, splits.test.el), rel=1e-5
    )
    before = path.read_text()
    assert essl_main(argv) == 2 and path.read_text() == before  # no silent overwrite
    # the supervised-from-scratch baseline
    assert (
        essl_main(
            [
                "phc",
                "finetune",
                "--scratch",
                "--family",
                "gpm",
                "--data-root",
                str(d),
                "--out",
                str(tmp_path / "scratch"),
                "--backbone",
                "phc_cnn_small",
                "--epochs",
                "1",
                "--n-train",
                "8",
                "--seeds",
                "3",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "scratch" / "eval" / "phc-finetune-n8-e1.json").read_text())
    assert res["source"]["kind"] == "scratch" and res["checkpoint"] is None and res["summary"]["std"] == 0


@pytest.mark.slow
def test_experiment_writes_the_table_and_resumes(root, tmp_path):
    from essl.experiments.photonics import run_experiment

    d, _ = root
    kw = dict(
        pretrain_epochs=1,
        extra_overrides=["batch_size=8", "precision=fp32", "subset=0"],  # 16 cells here
        finetune_overrides={"epochs": 1, "n_train": 8, "seeds": [1]},
        progress=False,
        protocol="last",
    )
    rec = run_experiment("gpm", d, tmp_path / "exp", "small", **kw)
    assert [r["label"] for r in rec["rows"]] == ["SimCLR", "SimCLR + Transform", "E-SimCLR"]
    assert rec["protocol"] == "last" and rec["milestones"] == [1] and rec["rows"][0]["winners"] is None
    assert read_config(tmp_path / "exp" / "phc-gpm-simclr").epochs == 1  # a cosine over the run's own epochs
    table = (tmp_path / "exp" / "phc-gpm-results.md").read_text()
    assert "E-SimCLR" in table and "phc_cnn_small" in table
    ckpt = tmp_path / "exp" / "phc-gpm-esimclr" / "checkpoint.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = run_experiment("gpm", d, tmp_path / "exp", "small", **kw)
    assert ckpt.stat().st_mtime_ns == stamp  # reused, not retrained
    assert [r["summary"] for r in again["rows"]] == [r["summary"] for r in rec["rows"]]
    with pytest.raises(EsslError, match="other settings"):
        run_experiment("gpm", d, tmp_path / "exp", "small", **{**kw, "pretrain_epochs": 2})


# --------------------------------------------------------------------------------------------- official protocol
def test_official_milestones_scale_with_the_run():
    assert official_milestones(201) == (100, 200)  # photonics/main.py: eplist [100, 200], cosine over 201
    assert official_milestones(21) == (10, 20) and official_milestones(4) == (1, 3) and official_milestones(3) == (1, 2)
    with pytest.raises(EsslError, match="--protocol last"):
        official_milestones(2)


def test_official_protocol_fine_tunes_both_milestones_and_keeps_the_better(root, tmp_path):
    d, _ = root
    cfg = load_config("phc-blob-esimclr", FAST + [f"data_root={d}", "epochs=3", "keep_checkpoints=[1, 2]"])
    run = pretrain(cfg, tmp_path / "run", progress=False)
    argv = ["phc", "finetune", str(run), "--epochs", "2", "--n-train", "12", "--seeds", "1", "2", "3"]
    assert essl_main(argv) == 0  # --protocol official is the default for a run folder
    ev = run / "eval"
    res = json.loads((ev / "phc-finetune-n12-e2-official.json").read_text())
    parts = {n: json.loads((ev / f"phc-finetune-n12-e2-{n}.json").read_text()) for n in ("epoch_0001", "epoch_0002")}
    assert [p["checkpoint"]["epoch"] for p in parts.values()] == [1, 2]
    sel = res["selection"]
    assert sel["protocol"] == "official" and sel["milestones"] == ["epoch_0001", "epoch_0002"]
    assert sel["milestone_epochs"] == [1, 2] and sel["pretrain_epochs"] == 3 and sel["test_set_selection"] is True
    assert "TEST-SET SELECTION" in res["protocol"]["selection"]
    for i, r in enumerate(res["per_seed"]):
        mins = {n: min(p["per_seed"][i]["curve"][:-1]) for n, p in parts.items()}  # starts of epochs 1..E
        assert r["min_error"] == min(mins.values()) and r["checkpoint"] == min(mins, key=mins.get)
        assert sel["winners"][str(r["seed"])] == r["checkpoint"]
        assert r["final_error"] == parts["epoch_0002"]["per_seed"][i]["curve"][-1]
        assert {n: c["min_error"] for n, c in r["per_checkpoint"].items()} == mins
    assert res["summary"]["mean"] == pytest.approx(np.mean([r["min_error"] for r in res["per_seed"]]))
    # each checkpoint's result is the one-checkpoint protocol's (--checkpoint NAME) for that milestone
    one = json.loads((ev / "phc-finetune-n12-e2-epoch_0001.json").read_text())
    assert one["source"]["milestone"] == "epoch_0001" and "selection" not in one
    before = (ev / "phc-finetune-n12-e2-official.json").read_text()
    assert essl_main(argv) == 2 and (ev / "phc-finetune-n12-e2-official.json").read_text() == before
    assert essl_main(argv + ["--checkpoint", "epoch_0001"]) == 2  # one checkpoint is not the official protocol
    # a run without the two milestones is refused before anything is written
    bare = pretrain(load_config("phc-blob-simclr", FAST + [f"data_root={d}", "epochs=3"]), tmp_path / "b", False)
    with pytest.raises(EsslError, match=r"keep_checkpoints=\[1, 2\]"):
        finetune_official(bare, d, FinetuneSettings(epochs=1, n_train=8, seeds=[1]))
    assert essl_main(["phc", "finetune", str(bare), "--epochs", "1", "--n-train", "8"]) == 2
    assert not (bare / "eval").exists()


@pytest.mark.slow
def test_experiment_official_protocol(root, tmp_path):
    from essl.experiments.photonics import run_experiment

    d, _ = root
    kw = dict(
        extra_overrides=["batch_size=8", "precision=fp32", "subset=0"],
        finetune_overrides={"epochs": 1, "n_train": 8, "seeds": [1, 2]},
        progress=False,
    )
    with pytest.raises(EsslError, match="--pretrain-epochs 2 or more"):
        run_experiment("blob", d, tmp_path / "x", "small", pretrain_epochs=1, **kw)
    assert not (tmp_path / "x").exists()
    rec = run_experiment("blob", d, tmp_path / "exp", "small", pretrain_epochs=2, **kw)  # protocol official
    assert rec["protocol"] == "official" and rec["milestones"] == [1, 2]
    for row in rec["rows"]:
        run = tmp_path / "exp" / row["preset"]
        cfg = read_config(run)  # N + 1 epochs under one cosine, the checkpoints after N//2 and N kept
        assert cfg.epochs == 3 and cfg.keep_checkpoints == [1, 2] and cfg.warmup_epochs == 0
        res = json.loads((run / "eval" / "phc-finetune-n8-e1-official.json").read_text())
        assert row["winners"] == res["selection"]["winners"] and set(row["winners"]) == {"1", "2"}
        assert row["summary"] == res["summary"]
    table = (tmp_path / "exp" / "phc-blob-results.md").read_text()
    assert "checkpoint chosen per seed" in table and "TEST-SET SELECTION" in table
    stamp = (tmp_path / "exp" / "phc-blob-esimclr" / "checkpoint.pt").stat().st_mtime_ns
    again = run_experiment("blob", d, tmp_path / "exp", "small", pretrain_epochs=2, **kw)
    assert (tmp_path / "exp" / "phc-blob-esimclr" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert [r["summary"] for r in again["rows"]] == [r["summary"] for r in rec["rows"]]
    with pytest.raises(EsslError, match="other settings"):  # the last protocol's runs differ (epochs, milestones)
        run_experiment("blob", d, tmp_path / "exp", "small", pretrain_epochs=2, protocol="last", **kw)
    with pytest.raises(EsslError, match="--protocol must be one of"):
        run_experiment("blob", d, tmp_path / "exp", "small", protocol="best", **kw)


# --------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_essl_errors(root, tmp_path, h5_writer):
    write_h5 = h5_writer
    d, _ = root
    with pytest.raises(EsslError, match="does not exist"):
        load_dataset("phc-gpm", "train", str(tmp_path))  # missing file
    with pytest.raises(EsslError, match="data_root"):
        load_dataset("phc-gpm", "train", None)
    bad = tmp_path / "missing-key"
    bad.mkdir()
    write_h5(bad / "sq-blob-ul-15k-tm.h5", range(1, 5), False, 0, skip_key="unitcell/epsavg")
    with pytest.raises(EsslError, match="unitcell/epsavg"):
        load_dataset("phc-blob", "train", str(bad))
    write_h5(bad / "sq-blob-v3-tm.h5", range(1, 5), True, 0, skip_key="mpbcal/DOS")
    write_h5(bad / "sq-blob-test2k-tm.h5", range(1, 5), True, 0)
    with pytest.raises(EsslError, match="mpbcal/DOS"):
        load_labelled_splits("blob", bad, 2)
    shape = tmp_path / "wrong-shape"
    shape.mkdir()
    write_h5(shape / "mf1-sg3-25k-ul-s99-tm.h5", range(1, 5), False, 0, size=16)
    with pytest.raises(EsslError, match="32×32"):
        load_dataset("phc-gpm", "train", str(shape))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "mf1-sg3-25k-ul-s99-tm.h5").write_text("not hdf5")
    with pytest.raises(EsslError, match="Cannot read"):
        load_dataset("phc-gpm", "train", str(tmp_path / "junk"))
    with pytest.raises(EsslError, match="does not exist"):
        encoder_from_run(tmp_path / "no-run")
    with pytest.raises(EsslError, match="--epochs must be a whole number >= 1"):
        FinetuneSettings(epochs=0).validate()
    assert essl_main(["phc", "finetune", "--data-root", str(d)]) == 2  # neither RUN_DIR nor --scratch
    assert essl_main(["phc", "experiment", "--family", "gpm", "--data-root", str(tmp_path)]) == 2
    with pytest.raises(EsslError, match="Unknown"):
        make_group("rol")
    with pytest.raises(EsslError, match="at least one fine-tuning seed"):
        finetune(encoder_from_scratch("gpm", tmp_path / "s", "phc_cnn_small"), d, FinetuneSettings(seeds=[]))
    assert not (tmp_path / "s").exists()  # nothing written on a refused run
    assert (
        essl_main(
            [
                "phc",
                "finetune",
                "--scratch",
                "--family",
                "gpm",
                "--data-root",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "s2"),
                "--epochs",
                "1",
            ]
        )
        == 2
    )  # labelled files missing
    assert not (tmp_path / "s2").exists()
