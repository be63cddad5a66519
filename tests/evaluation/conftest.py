"""Fixtures of the evaluation tests: a tiny labelled image folder and two tiny pretraining runs on it."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_image_folder(root: Path, per_class: dict[str, int] | None = None, size: int = 16, classes: int = 2,
                      seed: int = 0) -> Path:
    """``root/{train,test}/c<k>/<i>.png``: noisy RGB images whose bright quadrant is the class (k = 0..3)."""
    per_class = per_class or {"train": 24, "test": 8}
    rng = np.random.default_rng(seed)
    half = size // 2
    for split, n in per_class.items():
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                r, q = divmod(c % 4, 2)
                img[r * half:(r + 1) * half, q * half:(q + 1) * half] += 150
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def pretrain_tiny(run_dir: Path, data_root: Path, equivariant: bool) -> Path:
    from essl.training.config import config_from_dict
    from essl.training.pretrain import pretrain

    values = {"dataset": "folder", "data_root": str(data_root), "image_size": 16, "backbone": "small_cnn",
              "projector": "small", "method": "simclr", "views": ["crop_only", "crop_only"], "batch_size": 16,
              "epochs": 2, "lr": 0.05, "knn_every": 1, "knn_k": 10, "num_threads": 1, "precision": "fp32",
              "channels_last": "false", "seed": 0,
              "equivariance": [{"group": "rotation", "weight": 0.4, "view": "crop_only_small", "head": "small"}]
              if equivariant else []}
    return pretrain(config_from_dict(values), run_dir, progress=False)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_folder) -> tuple[Path, Path]:
    """Two 2-epoch runs (E-SimCLR with rotation prediction, SimCLR) of the small CNN on the tiny folder."""
    base = tmp_path_factory.mktemp("runs")
    return (pretrain_tiny(base / "esimclr", tiny_folder, True), pretrain_tiny(base / "simclr", tiny_folder, False))
