"""The ImageNet pipeline: presets, the streamed image-folder source (decoded in DataLoader workers, sharded per rank
with exact epochs), LARS against a hand computation, and a few training steps with every ImageNet preset on a tiny
image folder made here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from essl.data import load_dataset, load_image_folder
from essl.data.image_folder import decode_image
from essl.augmentation import ViewRecipe, build_view
from essl.augmentation.crops import PaddedImages, sample_crop_boxes
from essl.data.imagenet import (
    ImageFolderBatches,
    box_size,
    decode_padded,
    decode_resized,
    decode_square,
    split_folder,
    stratified_subset,
)
from essl.errors import EsslError
from essl.data.batches import TensorBatches
from essl.runs import load_checkpoint, prepare_run_dir, read_metrics
from essl.training.config import PretrainConfig, config_from_dict, load_config, preset_path, read_yaml
from essl.training.model import ESSLModel
from essl.training.optim import LARS, build_optimizer
from essl.training.pretrain import Pretrainer, pretrain

PRESETS = [
    "imagenet-simclr",
    "imagenet-esimclr",
    "imagenet-simsiam",
    "imagenet-esimsiam",
    "imagenet-barlow",
    "imagenet-ebarlow",
]
CLASSES = ["n01440764", "n02102040", "n02979186"]
PER_CLASS = 12


# ------------------------------------------------------------------------------------------- a tiny ImageNet
def _make_imagenet(root: Path, per_class: int = PER_CLASS) -> Path:
    """``root/train`` and ``root/val`` with a few small images per class, in the formats ImageNet holds
    (RGB JPEG of any aspect ratio, a grayscale JPEG, a CMYK JPEG, PNG with alpha)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 3)):
        for c, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = [(48, 36), (36, 48), (40, 40), (64, 30)][i % 4]
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                arr[..., c] = 255  # a class colour
                im = Image.fromarray(arr)
                if i % 6 == 0:
                    im.convert("L").save(folder / f"{cls}_{i}.JPEG", quality=90)
                elif i % 6 == 1:
                    im.convert("RGBA").save(folder / f"{cls}_{i}.png")
                elif i % 6 == 2:
                    im.convert("CMYK").save(folder / f"{cls}_{i}.JPEG", quality=90)
                else:
                    im.save(folder / f"{cls}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    return _make_imagenet(tmp_path_factory.mktemp("imagenet"))


# --------------------------------------------------------------------------------------------------- presets
def test_every_imagenet_preset_loads_and_validates():
    for name in PRESETS:
        cfg = load_config(name)
        cfg.validate()
        assert cfg.dataset == "imagenet" and cfg.backbone == "resnet50" and cfg.epochs == 100
        assert cfg.views == ["imagenet1", "imagenet2"] and cfg.knn_every == 5 and cfg.knn_subset == 50
        assert cfg.online_probe
        with torch.device("meta"):  # builds ResNet-50 + projector + head without allocating them
            model = ESSLModel(cfg, 3)
        assert model.backbone.feature_dim == 2048


@pytest.mark.parametrize(
    "name, method, batch, eff_lr, wd, warmup, lam, head",
    [
        ("imagenet-simclr", "simclr", 4096, 4.8, 1e-6, 10, None, None),
        ("imagenet-esimclr", "simclr", 4096, 4.8, 1e-6, 10, 0.4, "imagenet_simclr"),
        ("imagenet-simsiam", "simsiam", 512, 0.1, 1e-4, 0, None, None),
        ("imagenet-esimsiam", "simsiam", 512, 0.1, 1e-4, 0, 0.08, "imagenet_simsiam"),
        ("imagenet-barlow", "barlow_twins", 4096, 3.2, 1e-6, 10, None, None),
        ("imagenet-ebarlow", "barlow_twins", 4096, 3.2, 1e-6, 10, 8.0, "imagenet_simsiam"),
    ],
)
def test_imagenet_presets_hold_the_papers_settings(name, method, batch, eff_lr, wd, warmup, lam, head):
    """rdangovs/essl imagenet/*/main.py and their README commands."""
    cfg = load_config(name)
    assert (cfg.method, cfg.batch_size, cfg.weight_decay, cfg.warmup_epochs) == (method, batch, wd, warmup)
    assert cfg.lr * cfg.batch_size / 256 == pytest.approx(eff_lr)
    if lam is None:
        assert cfg.equivariance == []
    else:
        (task,) = cfg.equivariance
        assert (task.group, task.weight, task.view, task.head) == ("rotation", lam, "imagenet_small", head)
    if method == "simclr":
        assert cfg.temperature == 0.2 and not cfg.full_nt_xent and cfg.projector == "simclr_imagenet"
    if method in ("simclr", "barlow_twins"):
        assert cfg.optimizer == "lars" and cfg.exclude_bias_norm and cfg.final_lr_ratio == 0.001
        assert cfg.lars_eta == 0.001 and cfg.momentum == 0.9
    if method == "simsiam":
        assert cfg.optimizer == "sgd" and cfg.predictor_fixed_lr and cfg.predictor_hidden == 512
        assert cfg.projector == "simsiam_imagenet" and cfg.final_lr_ratio == 0.0
    if method == "barlow_twins":
        assert cfg.projector == "barlow_imagenet" and cfg.barlow_lambda == 0.0051
        assert cfg.lr * cfg.bias_norm_lr_scale == pytest.approx(0.0048)  # lr-biases of the official code


def test_bias_lr_scale_needs_its_own_group():
    with pytest.raises(EsslError, match="exclude_bias_norm"):
        config_from_dict({"bias_norm_lr_scale": 0.024})


# --------------------------------------------------------------------------------------------------- LARS
@pytest.mark.parametrize("clip, lr", [(False, 0.5), (True, 0.5), (True, 0.005)])  # trust ≈ 0.013: the last clips
def test_lars_matches_a_hand_computation(clip, lr):
    """Two LARS steps on Linear(3→2) + BatchNorm1d(2) with exclude_bias_norm, computed by hand: the weight gets
    weight decay and the trust ratio η‖w‖/‖g + wd·w‖ (with ``lars_clip``: min(trust / lr, 1)); the Linear bias and
    both BN parameters (1-d) get neither."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.5, 0.5]))
        model[1].bias.copy_(torch.tensor([0.1, -0.2]))
    cfg = PretrainConfig(
        optimizer="lars", exclude_bias_norm=True, weight_decay=0.1, momentum=0.9, lars_eta=0.02, lars_clip=clip
    )
    opt = build_optimizer(model, cfg, lr)
    assert isinstance(opt, LARS)
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert not groups[id(model[0].weight)]["lars_exclude"] and groups[id(model[0].weight)]["weight_decay"] == 0.1
    for p in (model[0].bias, model[1].weight, model[1].bias):
        assert groups[id(p)]["lars_exclude"] and groups[id(p)]["weight_decay"] == 0.0

    params = [model[0].weight, model[0].bias, model[1].weight, model[1].bias]
    values = [p.detach().double().numpy().copy() for p in params]
    momenta = [np.zeros_like(v) for v in values]
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
        for i, gr in enumerate(grads):
            d = gr.double().numpy()
            if i == 0:  # the only decayed, adapted parameter
                d = d + 0.1 * values[i]
                trust = 0.02 * np.linalg.norm(values[i]) / np.linalg.norm(d)
                d = d * (min(trust / lr, 1.0) if clip else trust)
            momenta[i] = 0.9 * momenta[i] + d
            values[i] = values[i] - lr * momenta[i]
        for p, v in zip(params, values):
            np.testing.assert_allclose(p.detach().double().numpy(), v, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------ the streamed source
def test_decode_square_handles_imagenet_formats(tmp_path):
    Image.new("CMYK", (90, 60), (0, 255, 0, 0)).save(tmp_path / "cmyk.JPEG")
    Image.new("L", (33, 70), 128).save(tmp_path / "gray.JPEG")
    Image.new("RGBA", (20, 30), (255, 0, 0, 10)).save(tmp_path / "alpha.png")
    big = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.JPEG")  # decoded at a reduced DCT scale (draft)
    for name in ("cmyk.JPEG", "gray.JPEG", "alpha.png", "big.JPEG"):
        arr = decode_square(tmp_path / name, 32)
        assert arr.shape == (3, 32, 32) and arr.dtype == np.uint8, name
    assert decode_square(tmp_path / "gray.JPEG", 16, channels=1).shape == (1, 16, 16)
    (tmp_path / "broken.JPEG").write_bytes(b"not an image")
    with pytest.raises(EsslError, match="broken.JPEG"):
        decode_square(tmp_path / "broken.JPEG", 32)


def test_split_folder_layout(imagenet, tmp_path):
    assert split_folder(imagenet, "train") == imagenet / "train"
    assert split_folder(imagenet, "test") == imagenet / "val"
    with pytest.raises(EsslError, match="data_root"):
        split_folder(None, "train")
    with pytest.raises(EsslError, match="train/"):
        split_folder(tmp_path, "train")


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_exact_and_sharded(imagenet, workers):
    """Every rank decodes only its slice; the slices put together are the global batches of one process, and
    those are the batches of the in-memory TensorBatches over the same decoded boxes (same order)."""
    size, batch = 24, 8
    root = imagenet / "train"
    files = ImageFolderBatches(root, batch, seed=5, image_size=size, workers=0).files
    decoded = [decode_padded(f, size) for f in files]
    reference = TensorBatches(torch.stack([torch.from_numpy(b) for b, _ in decoded]), batch, seed=5)
    valid = torch.tensor([v for _, v in decoded])
    shards = [
        ImageFolderBatches(root, batch, seed=5, rank=r, world_size=2, image_size=size, workers=workers)
        for r in range(2)
    ]
    assert len(reference) == len(shards[0]) == 3 * PER_CLASS // batch
    for epoch in (0, 1):
        parts = [list(s.epoch(epoch)) for s in shards]
        order = reference.order(epoch)
        for step, full in enumerate(reference.epoch(epoch)):
            assert isinstance(parts[0][step], PaddedImages) and parts[0][step].images.dtype == torch.uint8
            assert parts[0][step].shape == (batch // 2, 3, box_size(size), box_size(size))
            assert torch.equal(torch.cat([p[step].images for p in parts]), full)
            assert torch.equal(
                torch.cat([p[step].sizes for p in parts]), valid[order[step * batch : (step + 1) * batch]]
            )
    resumed = list(shards[1].epoch(1, start_step=2))
    assert len(resumed) == len(shards[1]) - 2 and torch.equal(resumed[0].images, list(shards[1].epoch(1))[2].images)
    assert shards[0].fingerprint() == shards[1].fingerprint()


def test_padded_decoding_keeps_the_whole_4_3_image(tmp_path):
    """Shorter side to the working size, aspect kept, top-left in an L = round(S·4/3) box; wider images are cut
    to L, centred; the valid size says where the image ends."""
    rng = np.random.default_rng(1)
    for (w, h), valid in (((400, 300), (24, 32)), ((300, 400), (32, 24)), ((640, 300), (24, 32)), ((30, 30), (24, 24))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "a.JPEG", quality=90)
        box, size = decode_padded(tmp_path / "a.JPEG", 24)
        assert box.shape == (3, 32, 32) and size == valid, (w, h)
        assert not box[:, size[0] :, :].any() and not box[:, :, size[1] :].any()  # zero padding outside
    assert decode_resized(tmp_path / "a.JPEG", 24).shape == (3, 24, 24)


def test_crops_reach_both_edges_of_a_4_3_image(tmp_path):
    """A 4:3 JPEG with a red band on its left eighth and a blue band on its right eighth (the parts a central
    square never shows): random-resized crops of the streamed pipeline see both bands, and never the padding."""
    arr = np.full((300, 400, 3), 128, dtype=np.uint8)
    arr[:, :50] = (255, 0, 0)
    arr[:, -50:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.JPEG", quality=95)
    box, valid = decode_padded(tmp_path / "wide.JPEG", 48)
    assert valid == (48, 64)
    batch = PaddedImages(torch.from_numpy(box)[None].repeat(256, 1, 1, 1), torch.tensor([valid] * 256))
    torch.manual_seed(0)
    boxes = sample_crop_boxes(batch.sizes, (0.08, 1.0), (3 / 4, 4 / 3))
    x0, y0, bw, bh = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + bw <= 64).all() and (y0 + bh <= 48).all()
    assert (x0 == 0).any() and (x0 + bw == 64).any()
    view = build_view(ViewRecipe(size=16, scale=(0.08, 1.0), hflip=0.0, jitter_p=0.0, grayscale_p=0.0), 3)
    torch.manual_seed(0)
    crops = view(batch)
    red = ((crops[:, 0] > 0.8) & (crops[:, 2] < 0.2)).flatten(1).any(1)
    blue = ((crops[:, 2] > 0.8) & (crops[:, 0] < 0.2)).flatten(1).any(1)
    black = (crops.amax(1) < 0.1).flatten(1).any(1)  # the zero padding below/right of the image
    assert red.any() and blue.any() and not black.any()
    # the old central square: no crop of it ever shows a band
    square = torch.from_numpy(decode_square(tmp_path / "wide.JPEG", 48))
    assert not ((square[0] > 200) & (square[2] < 50)).any() and not ((square[2] > 200) & (square[0] < 50)).any()


def test_crop_boxes_follow_torchvision_get_params():
    """Area fraction within scale and aspect within ratio when a draw fits; the central clamped crop when none can."""
    torch.manual_seed(0)
    sizes = torch.tensor([[300, 400]] * 2000)
    x0, y0, bw, bh = sample_crop_boxes(sizes, (0.2, 0.6), (3 / 4, 4 / 3)).T.double()
    frac = bw * bh / (300 * 400)
    assert frac.min() > 0.19 and frac.max() < 0.61 and (bw / bh).min() > 0.74 and (bw / bh).max() < 1.34
    # an extreme image where no draw fits (ratio range far from its aspect): central crop, aspect clamped
    wide = sample_crop_boxes(torch.tensor([[10, 400]]), (0.9, 1.0), (1.0, 1.0))
    assert wide.tolist() == [[195, 0, 10, 10]]


def test_subset_matches_the_in_memory_draw(imagenet):
    """``subset`` picks the same (class-stratified) files for the streamed source and for ImageData.take."""
    data = load_image_folder(imagenet / "train", 16)
    src = ImageFolderBatches(imagenet / "train", 4, seed=3, image_size=16, workers=0, subset=10)
    assert len(src.files) == 10 and torch.bincount(src.labels).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    taken = data.take(10, 3)
    decoded = torch.stack([torch.from_numpy(decode_image(f, 16).copy()) for f in src.files])  # the in-memory decoder
    assert torch.equal(decoded, taken.images) and torch.equal(src.labels, taken.labels)
    assert torch.equal(stratified_subset(None, 10, 4, 0), stratified_subset(None, 10, 4, 0))


def test_in_memory_imagenet_for_small_folders(imagenet):
    data = load_dataset("imagenet", "test", str(imagenet), 16)  # val/ is the test split
    assert data.images.shape == (3 * len(CLASSES), 3, 16, 16) and data.num_classes == len(CLASSES)


# --------------------------------------------------------------------------------- training on the folder
def _tiny(name: str, imagenet: Path, **extra) -> PretrainConfig:
    """The preset with a small backbone, projector, crops and batch; every other setting as in the paper."""
    values = read_yaml(preset_path(name))
    values.update(
        {
            "data_root": str(imagenet),
            "backbone": "resnet18",
            "projector": "small",
            "predictor_hidden": 64,
            "image_size": 40,
            "views": ["imagenet1@32", "imagenet2@32"],
            "batch_size": 8,
            "epochs": 1,
            "warmup_epochs": min(values["warmup_epochs"], 0.5),
            "workers": 0,
            "num_threads": 1,
            "precision": "fp32",
            **extra,
        }
    )
    for task in values["equivariance"]:
        task["view"] = "imagenet_small@16"
    return config_from_dict(values)


@pytest.mark.parametrize("name", PRESETS)
def test_each_imagenet_preset_trains_on_a_tiny_folder(name, imagenet, tmp_path):
    cfg = _tiny(name, imagenet)
    run = tmp_path / "run"
    prepare_run_dir(run, overwrite=False)
    trainer = Pretrainer(cfg, run, progress=False)
    assert isinstance(trainer.batches, ImageFolderBatches) and trainer.train is None
    rows = trainer.fit()
    assert len(rows) == 1 and rows[0]["step"] == 3 * PER_CLASS // 8 and np.isfinite(rows[0]["loss"])
    if cfg.equivariance:
        assert "pred_loss/rotation" in rows[0]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["config"]["dataset"] == "imagenet" and ckpt["epoch"] == 1
    lrs = {
        ("bias" if g.get("lars_exclude") else "fixed" if g.get("fixed_lr") else "main"): g["lr"]
        for g in trainer.optimizer.param_groups
    }
    if name.endswith("barlow"):  # the Barlow Twins bias/norm lr: 0.0048 / 0.2 of the weights' lr
        assert lrs["bias"] == pytest.approx(0.024 * lrs["main"])
    elif "simclr" in name:
        assert lrs["bias"] == pytest.approx(lrs["main"])
    else:  # SimSiam: the predictor keeps the initial lr, the rest follows the cosine
        assert lrs["fixed"] == pytest.approx(cfg.lr * cfg.batch_size / 256) and "bias" not in lrs


def test_streamed_run_resumes_exactly(imagenet, tmp_path, monkeypatch):
    """A run killed in its second epoch and resumed ends with the same weights as a run that was never stopped
    (DataLoader workers decode; the order comes from (seed, epoch) and the augmentations from the checkpoint)."""
    cfg = dict(epochs=2, workers=2, subset=16)
    straight = pretrain(_tiny("imagenet-esimclr", imagenet, **cfg), tmp_path / "straight", progress=False)
    assert [r["step"] for r in read_metrics(straight)] == [2, 4]

    original = ImageFolderBatches.epoch

    def dies_in_epoch_two(self, epoch, start_step=0):
        for i, batch in enumerate(original(self, epoch, start_step)):
            if epoch == 1 and i == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(ImageFolderBatches, "epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_tiny("imagenet-esimclr", imagenet, **cfg), tmp_path / "killed", progress=False)
    monkeypatch.setattr(ImageFolderBatches, "epoch", original)
    pretrain(None, tmp_path / "killed", resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_streamed_run_monitors_knn_and_the_online_probe(imagenet, tmp_path):
    """The kNN monitor on a fixed class-stratified subset of train/ and val/ (decoded in workers) and the online
    probe on the streamed batches, both in metrics.jsonl."""
    cfg = _tiny("imagenet-esimclr", imagenet, epochs=2, knn_every=1, knn_subset=2, workers=1)
    prepare_run_dir(tmp_path / "run", overwrite=False)
    trainer = Pretrainer(cfg, tmp_path / "run", progress=False)
    m = trainer.monitor
    assert m.streamed and torch.bincount(m.bank_labels).tolist() == [2, 2, 2] == torch.bincount(m.query_labels).tolist()
    assert all("/val/" in p.decode() for p in m.queries.paths) and m.queries[0].shape == (3, 35, 35)
    rows = trainer.fit()
    for row in rows:
        assert {"knn_top1", "online_probe_top1", "online_probe_val_top1"} <= row.keys()
    assert "online_probe" in load_checkpoint(tmp_path / "run" / "checkpoint.pt")


def test_streamed_dataset_smaller_than_a_batch(imagenet, tmp_path):
    with pytest.raises(EsslError, match="fewer than"):
        Pretrainer(_tiny("imagenet-simclr", imagenet, batch_size=64), tmp_path, progress=False)


def test_view_size_suffix_is_checked(imagenet, tmp_path):
    with pytest.raises(EsslError, match="whole number"):
        Pretrainer(_tiny("imagenet-simclr", imagenet, views=["imagenet1@big", "imagenet2"]), tmp_path, progress=False)


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_on_an_image_folder(imagenet, tmp_path):
    """ImageNet path under torchrun: 2 gloo processes, each with 2 DataLoader workers decoding its slice."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    overrides = [
        f"data_root={imagenet}",
        "backbone=resnet18",
        "projector=small",
        "image_size=40",
        "views=imagenet1@32,imagenet2@32",
        "batch_size=8",
        "epochs=1",
        "workers=2",
        "precision=fp32",
        "equivariance=[{group: rotation, weight: 0.4, view: imagenet_small@16, head: imagenet_simclr}]",
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and not k.startswith("SLURM_")
    }
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "essl",
        "pretrain",
        "imagenet-esimclr",
        *overrides,
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-6000:]
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 1 and rows[0]["step"] == 3 * PER_CLASS // 8 and np.isfinite(rows[0]["loss"])
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["world_size"] == 2
