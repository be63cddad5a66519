"""Bad inputs of ``essl sweep`` and ``essl demo``, and of image-folder datasets."""

import shutil
from pathlib import Path

import pytest

from .harness import Case, both, check, copy_in, image_folder, params, tiny_run

SW = (
    "sweep",
    "--out",
    "s",
    "--transforms",
    "hflip",
    "--seeds",
    "1",
    "epochs=1",
    "subset=64",
    "batch_size=32",
    "num_threads=1",
    "--no-progress",
)
RUN = copy_in(tiny_run, "run")
FOLDER = copy_in(image_folder, "data")


def rename(src: str, dst: str):
    def setup(ws: Path) -> None:
        shutil.move(ws / src, ws / dst)

    return setup


def corrupt(name: str):
    def setup(ws: Path) -> None:
        (ws / name).write_bytes(b"not an image")

    return setup


FOLDER_RUN = (
    "pretrain",
    "mnist5k-simclr",
    "dataset=folder",
    "data_root=data",
    "image_size=16",
    "epochs=1",
    "batch_size=8",
    "knn_every=0",
    "views=crop_only,crop_only",
    "num_threads=1",
    "warmup_epochs=0",
    "--out",
    "r",
    "--no-progress",
)

CASES = [
    # sweep
    Case("sweep-seeds-zero", (*SW, "--seeds", "0"), ("--seeds", "0")),
    Case("sweep-weight-nan", (*SW, "--weight", "nan"), ("--weight", "nan")),
    Case("sweep-weight-negative", (*SW, "--weight", "-0.4"), ("--weight", "-0.4")),
    Case("sweep-pred-samples-negative", (*SW, "--pred-samples", "-1"), ("--pred-samples", "-1")),
    Case(
        "sweep-pred-samples-above-order",
        (*SW[:4], "rotation", *SW[5:], "--pred-samples", "9"),
        ("samples", "9", "rotation", "4"),
    ),
    Case("sweep-unknown-transform", (*SW[:4], "spin", *SW[5:]), ("spin",)),
    Case("sweep-bad-setting", (*SW, "lr=nan"), ("lr", "nan")),
    Case("sweep-bad-shard", (*SW, "--shard", "2/2"), ("--shard", "2/2")),
    Case("sweep-subset-too-large", (*SW, "subset=9000"), ("subset", "9000", "4000")),
    Case("sweep-unknown-view", (*SW, "--view", "crop_onyl"), ("crop_onyl",)),
    # demo
    Case("demo-epochs-zero", ("demo", "--epochs", "0", "--out", "d"), ("--epochs", "0")),
    Case("demo-subset-negative", ("demo", "--subset", "-1", "--out", "d"), ("--subset", "-1")),
    Case(
        "demo-subset-too-large",
        ("demo", "--subset", "5000", "--epochs", "1", "--out", "d", "--no-progress"),
        ("subset", "5000", "4000"),
    ),
    Case("demo-seed-negative", ("demo", "--seed", "-1", "--out", "d"), ("--seed", "-1")),
    # image folders
    Case(
        "folder-test-class-not-in-train",
        ("knn", "run", "--data-root", "data"),
        ("'c9'",),
        setup=both(RUN, FOLDER, rename("data/test/c1", "data/test/c9")),
    ),
    Case(
        "folder-pretrain-test-class-not-in-train",
        (*FOLDER_RUN[:-4], "knn_every=1", "knn_k=4", *FOLDER_RUN[-4:]),
        ("'c9'",),
        setup=both(FOLDER, rename("data/test/c1", "data/test/c9")),
    ),
    Case("folder-missing", FOLDER_RUN, ("data",)),
    Case("folder-corrupt-image", FOLDER_RUN, ("3.png",), setup=both(FOLDER, corrupt("data/train/c0/3.png"))),
    Case(
        "folder-no-images", FOLDER_RUN, ("data",), setup=lambda ws: (ws / "data" / "train" / "c0").mkdir(parents=True)
    ),
    Case("knn-other-dataset-without-root", ("knn", "run", "--dataset", "cifar10"), ("--data-root",), setup=RUN),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, tmp_path):
    check(case, tmp_path)
