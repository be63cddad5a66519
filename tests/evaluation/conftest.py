"""Fixtures of the evaluation tests: a tiny labelled image folder and two tiny pretraining runs on it."""

from pathlib import Path

import pytest
from image_folders import make_image_folder


def pretrain_tiny(run_dir: Path, data_root: Path, equivariant: bool) -> Path:
    from essl.training.config import config_from_dict
    from essl.training.pretrain import pretrain

    values = {
        "dataset": "folder",
        "data_root": str(data_root),
        "image_size": 16,
        "backbone": "small_cnn",
        "projector": "small",
        "method": "simclr",
        "views": ["crop_only", "crop_only"],
        "batch_size": 16,
        "epochs": 2,
        "lr": 0.05,
        "knn_every": 1,
        "knn_k": 10,
        "num_threads": 1,
        "precision": "fp32",
        "channels_last": "false",
        "seed": 0,
        "equivariance": [{"group": "rotation", "weight": 0.4, "view": "crop_only_small", "head": "small"}]
        if equivariant
        else [],
    }
    return pretrain(config_from_dict(values), run_dir, progress=False)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_folder) -> tuple[Path, Path]:
    """Two 2-epoch runs (E-SimCLR with rotation prediction, SimCLR) of the small CNN on the tiny folder."""
    base = tmp_path_factory.mktemp("runs")
    return (pretrain_tiny(base / "esimclr", tiny_folder, True), pretrain_tiny(base / "simclr", tiny_folder, False))
