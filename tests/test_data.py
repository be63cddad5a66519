"""Datasets: MNIST-5k split, CIFAR in its real on-disk format (built here), image folders, and clear errors."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from essl.data import load_cifar, load_dataset, load_image_folder, load_mnist5k
from essl.errors import EsslError


def write_cifar10(root, n_per_file=10000, train_files=5, rng=np.random.default_rng(0)):  # noqa: B008 (one stream)
    """A CIFAR-10 python-version folder as the real archive lays it out (bytes keys, uint8 rows of 3072)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, train_files + 1)] + ["test_batch"]
    for name in names:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n_per_file).tolist(),
            b"data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n_per_file)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, fh, protocol=2)
    return folder


def test_mnist5k_split_is_fixed_and_stratified():
    train, test = load_mnist5k("train"), load_mnist5k("test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert torch.equal(train.labels.bincount(), torch.full((10,), 400))
    assert torch.equal(test.labels.bincount(), torch.full((10,), 100))
    # no digit in both splits, and the same split every time
    flat_train = {bytes(x.numpy()) for x in train.images.flatten(1)}
    assert not any(bytes(x.numpy()) in flat_train for x in test.images.flatten(1))
    assert torch.equal(load_mnist5k("test").images, test.images)


def test_take_is_stratified_and_seeded():
    data = load_mnist5k("train")
    sub = data.take(300, seed=3)
    assert len(sub) == 300 and torch.equal(sub.labels.bincount(), torch.full((10,), 30))
    assert torch.equal(sub.images, data.take(300, seed=3).images)
    assert not torch.equal(sub.images, data.take(300, seed=4).images)


def test_cifar10_real_format_loads(tmp_path):
    folder = write_cifar10(tmp_path, n_per_file=10000, train_files=5)
    with open(folder / "data_batch_2", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    train = load_cifar("cifar10", tmp_path, "train")
    test = load_dataset("cifar10", "test", str(folder))
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    # image 7 of batch 2: rows are R(1024) G(1024) B(1024), each row-major 32x32
    expected = torch.from_numpy(raw[b"data"][7].reshape(3, 32, 32))
    assert torch.equal(train.images[10000 + 7], expected)
    assert train.labels[10000 + 7].item() == raw[b"labels"][7]


def test_cifar_missing_folder_says_what_and_how(tmp_path):
    with pytest.raises(EsslError, match="cifar-10-batches-py.*Download"):
        load_cifar("cifar10", tmp_path / "nowhere")
    with pytest.raises(EsslError, match="data_root"):
        load_dataset("cifar10", "train", None)


def test_cifar_incomplete_and_truncated(tmp_path):
    folder = write_cifar10(tmp_path, n_per_file=20, train_files=5)
    (folder / "data_batch_3").unlink()
    with pytest.raises(EsslError, match="incomplete.*data_batch_3"):
        load_cifar("cifar10", tmp_path)
    write_cifar10(tmp_path / "b", n_per_file=20, train_files=5)
    path = tmp_path / "b" / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(EsslError, match="not a valid CIFAR-10 batch"):
        load_cifar("cifar10", tmp_path / "b")


def test_cifar_truncated_count_is_reported(tmp_path):
    write_cifar10(tmp_path, n_per_file=20, train_files=5)  # valid pickles, but not 10,000 images per file
    with pytest.raises(EsslError, match="holds 20 images, expected 10000"):
        load_cifar("cifar10", tmp_path)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = write_cifar10(tmp_path, n_per_file=10000, train_files=5)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, fh)
    with pytest.raises(EsslError, match="not allowed"):
        load_cifar("cifar10", tmp_path, "test")
    assert not (tmp_path / "pwned").exists()


def test_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 50), ("test", 10)):
        with open(folder / name, "wb") as fh:
            pickle.dump(
                {
                    b"fine_labels": rng.integers(0, 100, n).tolist(),
                    b"coarse_labels": [0] * n,
                    b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                },
                fh,
                protocol=2,
            )
    data = load_cifar("cifar100", tmp_path, "train")
    assert data.images.shape == (50, 3, 32, 32) and data.num_classes == 100


def test_image_folder_labelled_and_unlabelled(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "lab" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "lab" / cls / f"{i}.png")
    data = load_image_folder(tmp_path / "lab", image_size=16)
    assert data.images.shape == (6, 3, 16, 16) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "unlab").mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "unlab" / "a.jpg")
    data = load_image_folder(tmp_path / "unlab", image_size=8)
    assert data.labels is None and data.images.shape == (1, 3, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(EsslError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EsslError, match="No images found"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "bad" / "x").mkdir(parents=True)
    (tmp_path / "bad" / "x" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EsslError, match="Cannot read image"):
        load_image_folder(tmp_path / "bad")


def test_image_folder_test_classes_matched_by_name(tmp_path):
    """A test split with fewer (or differently ordered) class folders keeps the train split's class indices; a test
    class that train lacks is refused by name."""
    rng = np.random.default_rng(0)
    for split, classes in (("train", ("ant", "bee", "cat")), ("test", ("cat",))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / split / cls / "0.png")
    test = load_dataset("folder", "test", str(tmp_path), image_size=8)
    assert test.labels.tolist() == [2] and test.num_classes == 3  # by position it would have been class 0, "ant"
    (tmp_path / "test" / "dog").mkdir()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "test" / "dog" / "0.png")
    with pytest.raises(EsslError, match="'dog' of .*test have no counterpart in .*train"):
        load_dataset("folder", "test", str(tmp_path), image_size=8)
