"""h5 layout, the PhC2D-style loader and its error messages."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from essl.errors import EsslError
from essl.photonics.generate import GenerationSpec, generate
from essl.photonics.h5io import (
    DATASETS,
    essl_indices,
    load_phc,
    load_phc_split,
    present_indices,
    read_file_attrs,
    write_sample,
)
from essl.photonics.label import LabelConfig

FAST = LabelConfig(cutoff=4, nk=9)


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("phc")
    spec = GenerationSpec(family="blob", seed=3, label=FAST)
    return generate(spec, 1, 4, out, file_name="small-tm.h5", progress=False)


def test_layout_matches_original(labelled_file):
    with h5py.File(labelled_file, "r") as h5:
        assert sorted(h5["unitcell/mpbepsimage"].keys(), key=int) == ["1", "2", "3", "4"]
        for i in range(1, 5):
            img = h5[f"unitcell/mpbepsimage/{i}"]
            assert img.shape == (32, 32) and img.dtype == np.float32
            eps = h5[f"unitcell/epsavg/{i}"]
            assert eps.shape == () and eps.dtype == np.float32
            assert float(eps[()]) == pytest.approx(float(np.mean(img[()], dtype=np.float64)), rel=1e-6)
            dos = h5[f"mpbcal/DOS/{i}"]
            assert dos.shape == (500,) and dos.dtype == np.float32
            for extra in (
                "mpbcal/DOSn",
                "mpbcal/DOSeldiff",
                "mpbcal/DOSeldiffn",
                "unitcell/epsin",
                "unitcell/epsout",
                "unitcell/filling",
                "unitcell/uclevel",
                "unitcell/uccoefs",
            ):
                assert f"{extra}/{i}" in h5
            np.testing.assert_allclose(h5[f"mpbcal/DOSn/{i}"][()], dos[()] / np.sqrt(eps[()]), rtol=1e-6)
        assert present_indices(h5, labels=True) == {1, 2, 3, 4}
    attrs = read_file_attrs(labelled_file)
    assert attrs["complete"] and attrs["family"] == "blob" and attrs["seed"] == 3
    assert attrs["index_start"] == 1 and attrs["index_stop"] == 5
    assert '"cutoff": 4' in attrs["label_config"]


def test_loader_follows_phc2d(labelled_file):
    data = load_phc(labelled_file, indices=[3, 1])
    assert data.x.shape == (2, 1, 32, 32) and data.x.dtype == torch.float32
    assert data.y.shape == (2, 400) and data.eldiff.shape == (2, 400)
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    # Independent re-statement of the PhC2D recipe.
    with h5py.File(labelled_file, "r") as h5:
        for row, i in enumerate([3, 1]):
            eps = h5[f"unitcell/mpbepsimage/{i}"][()]
            epsavg = h5[f"unitcell/epsavg/{i}"][()]
            y = h5[f"mpbcal/DOS/{i}"][()][0:400] / np.sqrt(epsavg)
            el = np.linspace(0, 1.2, 500)[0:400] * 2 * np.pi
            np.testing.assert_allclose(data.x[row, 0].numpy(), (eps.astype("float32") - 1) / 19)
            np.testing.assert_allclose(data.y[row].numpy(), y.astype("float32"), rtol=1e-6)
            np.testing.assert_allclose(data.eldiff[row].numpy(), (y - el).astype("float32"), rtol=1e-5, atol=1e-5)
    assert list(data.indices) == [3, 1] and len(data) == 2
    assert len(load_phc(labelled_file)) == 4  # default: every complete index


def test_unlabelled_file(tmp_path):
    spec = GenerationSpec(family="gpm", seed=1, labels=False)
    path = generate(spec, 1, 3, tmp_path, file_name="ul.h5", progress=False)
    with h5py.File(path, "r") as h5:
        assert "mpbcal" not in h5
    data = load_phc(path, labelled=False)
    assert data.y is None and data.x.shape == (3, 1, 32, 32)
    with pytest.raises(EsslError, match="mpbcal/DOS"):
        load_phc(path, indices=[1], labelled=True)


def test_missing_file_names_the_generate_command(tmp_path):
    with pytest.raises(EsslError, match="essl phc generate --dataset gpm "):
        load_phc(tmp_path / "mf1-sg3-tm.h5")
    with pytest.raises(EsslError, match="blob-test"):
        load_phc_split(tmp_path, "blob", "test")


def test_corrupt_file_and_missing_key(tmp_path, labelled_file):
    bad = tmp_path / "sq-blob-v3-tm.h5"
    bad.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(EsslError, match="corrupt"):
        load_phc(bad, indices=[1])
    with pytest.raises(EsslError, match="unitcell/mpbepsimage/7"):
        load_phc(labelled_file, indices=[1, 7])
    assert bad.read_bytes() == b"this is not an HDF5 file"


def test_essl_indices():
    train = essl_indices("gpm", "train")
    assert len(train) == 3000 and len(set(train)) == 3000
    assert train.min() >= 1 and train.max() <= 7799
    np.random.seed(1)
    np.testing.assert_array_equal(train, np.random.choice(np.arange(1, 7800), 3000, replace=False))
    assert essl_indices("blob", "train").max() <= 5099
    np.testing.assert_array_equal(essl_indices("gpm", "test"), np.arange(7801, 9801))
    np.testing.assert_array_equal(essl_indices("blob", "test"), np.arange(1, 2000))
    assert len(essl_indices("gpm", "unlabeled")) == 20480
    assert len(essl_indices("blob", "unlabeled")) == 15000
    with pytest.raises(EsslError):
        essl_indices("cifar", "train")


def test_split_loader_uses_original_names(tmp_path, monkeypatch):
    import essl.photonics.h5io as h5io

    seen = []

    def few(dataset, split, nsam=3000, seed=1):
        seen.append((dataset, split, nsam, seed))
        return np.arange(1, 4)

    monkeypatch.setattr(h5io, "essl_indices", few)
    rng = np.random.default_rng(0)
    for preset in ("blob-test", "gpm-ul"):
        with h5py.File(tmp_path / DATASETS[preset].file, "w") as h5:
            for i in range(1, 4):
                img = rng.uniform(1, 20, (32, 32)).astype(np.float32)
                dos = None if preset.endswith("-ul") else np.ones(500, np.float32)
                write_sample(h5, i, img, float(img.mean()), dos)
    data = load_phc_split(tmp_path, "blob", "test")
    assert len(data) == 3 and data.y is not None
    data = load_phc_split(tmp_path, "gpm", "unlabeled")
    assert len(data) == 3 and data.y is None
    assert seen == [("blob", "test", 3000, 1), ("gpm", "unlabeled", 3000, 1)]
