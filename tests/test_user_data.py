"""Bring your own data: .npy arrays, greyscale image folders."""

import numpy as np
import pytest
import torch

from essl.data import load_dataset
from essl.data.npy import channel_stats
from essl.errors import EsslError
from tests.image_folders import make_image_folder


def write_npy(root, shape=(20, 12, 12), labels=True, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", shape[0]), ("test", shape[0] // 2)):
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "images.npy", rng.integers(0, 256, (n, *shape[1:]), dtype=np.uint8))
        if labels:
            np.save(root / split / "labels.npy", np.arange(n) % 3)
    return root


def test_npy_greyscale_and_labels(tmp_path):
    write_npy(tmp_path)
    train, test = load_dataset("npy", "train", str(tmp_path)), load_dataset("npy", "test", str(tmp_path))
    assert train.images.shape == (20, 1, 12, 12) and test.images.shape == (10, 1, 12, 12)
    assert train.images.dtype == torch.uint8 and train.num_classes == 3 and train.labels.tolist()[:4] == [0, 1, 2, 0]
    raw = np.load(tmp_path / "train" / "images.npy").astype(np.float64) / 255
    assert train.mean == pytest.approx((raw.mean(),)) and train.std == pytest.approx((raw.std(),))
    assert test.mean == train.mean  # both splits use the training statistics


def test_npy_channels_layouts_and_unlabelled(tmp_path):
    write_npy(tmp_path / "nchw", shape=(8, 3, 10, 10), labels=False)
    data = load_dataset("npy", "train", str(tmp_path / "nchw"))
    assert data.images.shape == (8, 3, 10, 10) and data.labels is None and len(data.mean) == 3
    (tmp_path / "nhwc").mkdir()
    nhwc = np.random.default_rng(1).integers(0, 256, (4, 10, 10, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc" / "images.npy", nhwc)  # flat folder: the training split
    data = load_dataset("npy", "train", str(tmp_path / "nhwc"))
    assert torch.equal(data.images, torch.from_numpy(nhwc).permute(0, 3, 1, 2))


def test_channel_stats_matches_numpy():
    x = torch.randint(0, 256, (5, 3, 4, 6), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.numpy().astype(np.float64) / 255
    assert mean == pytest.approx(tuple(ref.mean(axis=(0, 2, 3))))
    assert std == pytest.approx(tuple(ref.std(axis=(0, 2, 3))))


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "expected .*images.npy"),
        ("shape", "expected N×H×W"),
        ("dtype", "int32 values"),
        ("range", r"floats in \[2, 2\]"),
        ("labels", r"expected \(6,\)"),
        ("labels_float", "integer class indices"),
        ("pickle", "Cannot read"),
    ],
)
def test_npy_bad_inputs(tmp_path, case, match):
    train = tmp_path / "train"
    train.mkdir()
    images = np.zeros((6, 8, 8), dtype=np.uint8)
    if case == "shape":
        images = np.zeros((6, 5, 8, 8), dtype=np.uint8)
    elif case == "dtype":
        images = images.astype(np.int32)
    elif case == "range":
        images = np.full((6, 8, 8), 2.0)
    if case != "missing":
        if case == "pickle":
            np.save(train / "images.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        else:
            np.save(train / "images.npy", images)
    if case == "labels":
        np.save(train / "labels.npy", np.zeros(5, dtype=np.int64))
    if case == "labels_float":
        np.save(train / "labels.npy", np.zeros(6))
    with pytest.raises(EsslError, match=match):
        load_dataset("npy", "train", str(tmp_path))


def test_image_folder_greyscale(tmp_path):
    make_image_folder(tmp_path, size=16)
    grey = load_dataset("folder", "train", str(tmp_path), image_size=12, channels=1)
    rgb = load_dataset("folder", "train", str(tmp_path), image_size=12)
    assert grey.images.shape == (48, 1, 12, 12) and rgb.images.shape == (48, 3, 12, 12)
    assert len(grey.mean) == 1 and len(rgb.mean) == 3
    with pytest.raises(EsslError, match="channels must be 1"):
        load_dataset("folder", "train", str(tmp_path), channels=2)


def test_pretrain_on_npy_arrays(tmp_path):
    from essl.evaluation.loading import load_run_backbone
    from essl.training.config import load_config
    from essl.runs import read_metrics
    from essl.training.pretrain import pretrain

    write_npy(tmp_path / "data", shape=(64, 16, 16))
    cfg = load_config(
        "mnist5k-esimclr",
        [
            "dataset=npy",
            f"data_root={tmp_path / 'data'}",
            "epochs=1",
            "batch_size=32",
            "views=mnist@16,mnist@16",
            "knn_k=5",
            "num_threads=1",
            "equivariance=[{group: rotation, weight: 0.4, view: mnist_small@8, head: small}]",
        ],
    )
    run = pretrain(cfg, tmp_path / "run", progress=False)
    assert "knn_top1" in read_metrics(run)[-1]  # the labelled test split was found and used
    assert load_run_backbone(run)[0](torch.zeros(2, 1, 16, 16)).shape[0] == 2


def test_evaluators_take_data_in_memory(tmp_path):
    import json

    from essl.evaluation.evaluate import evaluate_knn, evaluate_linear_lbfgs
    from essl.evaluation.loading import memory_target
    from essl.models import SmallCNN

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = rng.integers(0, 80, (40, 12, 12), dtype=np.uint8)
    images[labels == 1, :6] += 150  # class 1: a bright top half
    torch.manual_seed(0)
    target = memory_target(
        SmallCNN(in_channels=1),
        images[:30],
        images[30:],
        train_labels=labels[:30],
        test_labels=labels[30:],
        out=tmp_path,
    )
    assert target.test.mean == target.train.mean and target.train.num_classes == 2
    knn = evaluate_knn(target, k=5)
    assert 0 <= knn["top1"] <= 100 and knn["data"]["train_images"] == 30
    assert json.loads((tmp_path / "eval" / "knn-k5-t0.1.json").read_text())["top1"] == knn["top1"]
    assert evaluate_linear_lbfgs(target)["top1"] >= 50
    with pytest.raises(EsslError, match="labels"):
        memory_target(SmallCNN(in_channels=1), images, images)
    with pytest.raises(EsslError, match="1-channel"):
        memory_target(
            SmallCNN(in_channels=1),
            np.zeros((4, 3, 8, 8), np.uint8),
            np.zeros((4, 3, 8, 8), np.uint8),
            train_labels=[0, 1, 0, 1],
            test_labels=[0, 1, 0, 1],
        )


SMALL = [
    "epochs=1",
    "batch_size=16",
    "views=mnist@12,mnist@12",
    "knn_k=5",
    "num_threads=1",
    "equivariance=[{group: rotation, weight: 0.4, view: mnist_small@8, head: small}]",
]


def test_pretrain_greyscale_image_folder_with_channels(tmp_path, capsys):
    import json

    import essl

    make_image_folder(tmp_path / "data", size=16)
    cfg = essl.load_config(
        "mnist5k-esimclr", ["dataset=folder", f"data_root={tmp_path / 'data'}", "image_size=14", "channels=1", *SMALL]
    )
    run = essl.pretrain(cfg, tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert "48 images, 2 classes, 1 channel(s), 14 px; 3 steps per epoch at global batch 16" in err
    recorded = json.loads((run / "run.json").read_text())["data"]
    assert (recorded["channels"], recorded["image_size"], recorded["mean"]) == (1, 14, [0.5])
    backbone, meta = essl.load_backbone(run)
    assert meta["in_channels"] == 1 and backbone(torch.zeros(2, 1, 12, 12)).shape[0] == 2
    from essl.cli import main

    assert main(["knn", str(run), "--k", "5"]) == 0  # evaluation decodes the folder as grey too
    assert json.loads((run / "eval" / "knn-k5-t0.1.json").read_text())["data"]["channels"] == 1


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["channels=2"], "channels must be 1 .greyscale. or 3"),
        (["channels=4"], r"channels must be a whole number in \[0, 3\]"),
        (["channels=1"], "channels applies to image folders"),  # mnist5k has its own
    ],
)
def test_channels_setting_is_checked(overrides, match):
    from essl.training.config import load_config

    with pytest.raises(EsslError, match=match):
        load_config("mnist5k-esimclr", overrides)


def test_pretrain_on_data_in_memory(tmp_path, capsys):
    import essl
    from essl.runs import read_config, read_metrics

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (48, 12, 12), dtype=np.uint8), np.arange(48) % 3
    test = torch.from_numpy(rng.integers(0, 256, (12, 12, 12), dtype=np.uint8))
    cfg = essl.load_config("mnist5k-esimclr", SMALL)
    run = essl.pretrain(cfg, tmp_path / "run", train=images, labels=labels, test=test, test_labels=np.arange(12) % 3)
    assert "data memory: 48 images, 3 classes, 1 channel(s), 12 px" in capsys.readouterr().err
    row = read_metrics(run)[-1]
    assert "online_probe_top1" in row and "knn_top1" in row  # labels and the test split were used
    assert read_config(run).dataset == "memory"

    with pytest.raises(EsslError, match="dataset=memory is data handed to essl.pretrain"):
        essl.pretrain(None, run, resume=True, changes={"epochs": 2})  # the arrays are needed again
    essl.pretrain(None, run, resume=True, changes={"epochs": 2}, train=images, labels=labels)
    assert read_metrics(run)[-1]["epoch"] == 2
    with pytest.raises(EsslError, match="go with train="):
        essl.pretrain(cfg, tmp_path / "other", labels=labels)
    with pytest.raises(EsslError, match="test= needs test_labels="):
        essl.pretrain(cfg, tmp_path / "other", train=images, test=test)
    assert not (tmp_path / "other").exists()
