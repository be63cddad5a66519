"""Evaluation streamed from disk: ImageNet-layout folders of JPEGs of varied sizes made here, a folder larger than
an (artificially lowered) in-memory limit, the on-disk feature cache, every protocol, the few-label list, and
torchrun (2 gloo processes) against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from essl.data import datasets
from essl.data.imagenet import CenterCropFiles
from essl.errors import EsslError
from essl.evaluation import evaluate as ev
from essl.training.features import extract_features
from essl.training.knn import knn_accuracy
from essl.evaluation.loading import load_target
from essl.evaluation.streamed import StreamedSplit, knn_accuracy_chunked
from essl.models import resnet18

SIZES = [(48, 36), (36, 48), (40, 40), (64, 30), (50, 38)]


def make_imagenet(root: Path, train: int = 6, val: int = 3, classes: int = 3, test_dir: str = "val") -> Path:
    """``root/train/<wnid>/*.JPEG`` and ``root/<test_dir>/<wnid>/*.JPEG``: RGB JPEGs of varied sizes and aspect
    ratios, each class a different dominant colour."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), (test_dir, val)):
        for c in range(classes):
            folder = root / split / f"n0{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = SIZES[(i + c) % len(SIZES)]
                arr = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
                arr[..., c] = 230
                Image.fromarray(arr).save(folder / f"n0{c}_{split}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    return make_imagenet(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("released") / "r18.pth"
    torch.save({"backbone": dict(resnet18().state_dict())}, path)
    return path


def target(backbone_file, data, tmp_path, dataset="imagenet", **kw):
    return load_target(
        backbone_file=backbone_file,
        dataset=dataset,
        data_root=str(data),
        arch="resnet18",
        image_size=40,
        out=tmp_path / "out",
        workers=kw.pop("workers", 0),
        **kw,
    )


def test_imagenet_is_streamed_and_knn_matches_a_direct_computation(imagenet, backbone_file, tmp_path, monkeypatch):
    t = target(backbone_file, imagenet, tmp_path)
    assert t.streamed and isinstance(t.train, StreamedSplit) and len(t.train) == 18 and len(t.test) == 9
    assert t.train.image_size == 35  # Resize(40) + CenterCrop(round(40·224/256))
    r = ev.evaluate_knn(t, k=5, t=0.1, device="cpu", precision="fp32")
    # reference: decode every image with the evaluation transform into memory and use the in-memory kNN
    ref = []
    for split in (t.train, t.test):
        images = torch.stack([CenterCropFiles(split.files, 40, 35)[i] for i in range(len(split))])
        ref.append(extract_features(t.backbone, images, split.mean, split.std))
    expect = knn_accuracy(ref[0], t.train.labels, ref[1], t.test.labels, 3, 5, 0.1)
    assert r["top1"] == pytest.approx(expect) and r["data"]["streamed"]
    cache = sorted((tmp_path / "out" / "eval" / "cache").glob("features-*.f16"))
    assert len(cache) == 2 and not list((tmp_path / "out" / "eval" / "cache").glob(".*partial"))
    feats = np.memmap(cache[0], dtype=np.float16, mode="r").reshape(-1, 512)
    assert feats.shape[0] in (9, 18)
    # a second evaluation of the same checkpoint reads the cache: no extraction at all
    monkeypatch.setattr(
        "essl.evaluation.streamed.extract_dataset_features",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("extracted again")),
    )
    again = ev.evaluate_linear_lbfgs(target(backbone_file, imagenet, tmp_path), device="cpu")
    assert 0 <= again["top1"] <= 100


def test_chunked_knn_equals_the_in_memory_knn():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(300, 16, generator=g), torch.randn(50, 16, generator=g)
    yb, yq = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (50,), generator=g)
    expect = knn_accuracy(bank, yb, queries, yq, 4, k=20, t=0.1)
    got = knn_accuracy_chunked(bank.numpy(), yb, queries.numpy(), yq, 4, k=20, t=0.1, chunk=7, bank_chunk=33)
    assert got == pytest.approx(expect)


def test_a_folder_larger_than_memory_is_streamed(tmp_path, backbone_file, monkeypatch):
    """With the in-memory limit lowered below the folder's decoded size, every evaluation streams it; nothing
    loads a split into memory."""
    data = make_imagenet(tmp_path / "big", test_dir="test")
    monkeypatch.setattr(datasets, "IN_MEMORY_LIMIT_BYTES", 10_000)  # the folder needs 27 × 3 × 40² = 130 kB
    monkeypatch.setattr(
        "essl.evaluation.loading.load_dataset",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded into memory")),
    )
    t = target(backbone_file, data, tmp_path, dataset="folder")
    assert t.streamed
    r = ev.evaluate_protocol(t, "imagenet_bt", epochs=1, batch_size=8, device="cpu", precision="fp32")
    assert 0 <= r["top1"] <= 100 and r["data"]["train_images_used"] == 18
    monkeypatch.setattr("essl.evaluation.linear.CHUNK_BYTES", 5 * 512 * 8)  # blocks of 5 rows of 512 features
    probe = ev.evaluate_linear_lbfgs(t, device="cpu")
    assert 0 <= probe["top1"] <= 100 and probe["data"]["train_images_used"] == 18


@pytest.mark.parametrize("protocol", ["cifar", "imagenet_simclr", "imagenet_bt", "imagenet_simsiam", "bt_finetune"])
def test_every_protocol_streams(protocol, imagenet, backbone_file, tmp_path):
    t = target(backbone_file, imagenet, tmp_path)
    r = ev.evaluate_protocol(t, protocol, epochs=2, repeats=1, batch_size=8, device="cpu", precision="fp32")
    run = r["runs"][0]
    assert len(run["loss_curve"]) == 2 and all(np.isfinite(run["loss_curve"]))
    assert run["steps_per_epoch"] == (2 if protocol == "cifar" else 3)  # drop_last only in the CIFAR protocol
    assert Path(r["result_file"]).is_file() and r["data"]["transform"]["train_crops"] == "from the whole image"


def test_diagnose_streams(imagenet, backbone_file, tmp_path):
    r = ev.evaluate_diagnostics(target(backbone_file, imagenet, tmp_path), "rotation", max_train=10, max_test=5)
    assert r["images"] == {"train": 10, "train_available": 18, "test": 5, "test_available": 9}
    assert r["protocol"]["max_test_images"] == 5 and r["protocol"]["overrides"]["max_test"]["used"] == 5
    assert r["invariance"]["per_element"][0] == pytest.approx(1.0)


def test_label_list(imagenet, backbone_file, tmp_path):
    t = target(backbone_file, imagenet, tmp_path)
    names = [f.name for f in t.train.files[::3]]
    (tmp_path / "1percent.txt").write_text("\n".join(names) + "\n\n")
    r = ev.evaluate_protocol(
        t,
        "imagenet_simclr",
        epochs=1,
        batch_size=4,
        label_list=tmp_path / "1percent.txt",
        device="cpu",
        precision="fp32",
    )
    assert r["data"]["train_images_used"] == len(names) == 6
    assert Path(r["result_file"]).name == "probe-imagenet_simclr-batchsize4-epochs1-labels-1percent.json"
    (tmp_path / "bad.txt").write_text("n00_train_0.JPEG\nnot_there.JPEG\n")
    with pytest.raises(EsslError, match="1 of the 2 names"):
        ev.evaluate_protocol(t, "imagenet_simclr", epochs=1, label_list=tmp_path / "bad.txt", device="cpu")
    with pytest.raises(EsslError, match="not both"):
        ev.evaluate_linear_lbfgs(t, label_fraction=0.1, label_list=tmp_path / "1percent.txt")


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_give_the_result_of_one(imagenet, backbone_file, tmp_path):
    """kNN and an augmented probe under torchrun (2 gloo processes) against one process: same numbers. Batch 17 of
    18 images: the last global batch has one image, so one process has an empty slice and still steps."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    common = [
        "--backbone-file",
        str(backbone_file),
        "--arch",
        "resnet18",
        "--dataset",
        "imagenet",
        "--data-root",
        str(imagenet),
        "--image-size",
        "40",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    results = {}
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        launch = (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
            if procs > 1
            else [sys.executable]
        )
        for cmd in (
            ["knn", "--k", "5"],
            ["probe", "--protocol", "imagenet_bt", "--epochs", "2", "--batch-size", "17", "--quiet"],
        ):
            res = subprocess.run(
                [*launch, "-m", "essl", *cmd, *common, "--out", str(out)],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert res.returncode == 0, res.stderr[-4000:]
            assert res.stdout.count("top-1") == 1  # printed once, by the first process
        results[procs] = {p.stem: json.loads(p.read_text()) for p in (out / "eval").glob("*.json")}
    one, two = results[1], results[2]
    assert one["knn-k5-t0.1"]["top1"] == two["knn-k5-t0.1"]["top1"]
    a, b = one["probe-imagenet_bt-batchsize17-epochs2"], two["probe-imagenet_bt-batchsize17-epochs2"]
    assert a["runs"][0]["processes"] == 1 and b["runs"][0]["processes"] == 2
    assert [c["top1"] for c in a["runs"][0]["test_curve"]] == [c["top1"] for c in b["runs"][0]["test_curve"]]
    assert np.allclose(a["runs"][0]["loss_curve"], b["runs"][0]["loss_curve"], rtol=1e-5)


def test_a_greyscale_backbone_reads_the_folder_as_grey(imagenet, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "grey.pth"
    torch.save({"backbone": dict(resnet18(in_channels=1).state_dict())}, path)
    t = target(path, imagenet, tmp_path)
    assert t.train.channels == 1 and t.train.eval_dataset()[0].shape == (1, 35, 35) and t.train.mean == (0.5,)
    assert 0 <= ev.evaluate_knn(t, k=5, device="cpu")["top1"] <= 100


def test_a_damaged_feature_cache_is_extracted_again(imagenet, backbone_file, tmp_path):
    """A cache that a killed evaluation left damaged (truncated metadata or features) is not read: the features
    are extracted again and the result is the same."""
    first = ev.evaluate_knn(target(backbone_file, imagenet, tmp_path), k=5, t=0.1, device="cpu", precision="fp32")
    feats = sorted((tmp_path / "out" / "eval" / "cache").glob("features-*.f16"))
    feats[0].with_suffix(".json").write_text('{"n": ')
    feats[1].write_bytes(feats[1].read_bytes()[:10])
    again = ev.evaluate_knn(target(backbone_file, imagenet, tmp_path), k=5, t=0.1, device="cpu", precision="fp32")
    assert again["top1"] == first["top1"]
    assert all(np.memmap(f, dtype=np.float16, mode="r").size % 512 == 0 for f in feats)
