"""Band-structure targets: ``essl phc generate --store-bands`` writes the official ``predict='bandstructures'``
keys (rdangovs/essl ``photonics/phc_data.py``; SIB-CL k order) and ``essl phc finetune --target bands`` regresses
them with the official ``calpercloss`` metric. Expected values come from direct solves and plain numpy."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from essl.cli import main as essl_main
from essl.errors import EsslError
from essl.photonics.bands import empty_lattice, fractional_error, official_kgrid, official_order
from essl.photonics.cells import make_cell
from essl.evaluation.photonics import dos_error
from essl.photonics.generate import GenerationSpec, generate
from essl.photonics.h5io import load_phc
from essl.photonics.label import LabelConfig
from essl.photonics.solver import band_structure, crystal_operator, solve_kpoints
from essl.photonics.symmetry import kgrid

torch.set_num_threads(1)
NK, CUT = 5, 3.0


def test_official_k_order_is_sibcl_meshgrid():
    k1 = -0.5 + (np.arange(NK) + 0.5) / NK
    gx, gy = np.meshgrid(k1, k1)  # SIB-CL get_kgrid: np.ravel of meshgrid(kx, ky)
    expected = np.stack([gx.ravel(), gy.ravel()], 1)
    assert np.array_equal(official_kgrid(NK), expected)
    assert np.array_equal(kgrid(NK)[official_order(NK)], expected)
    assert official_kgrid(NK)[1].tolist() == pytest.approx([k1[1], k1[0]])  # k_x runs fastest


def test_unfolded_bands_equal_a_full_grid_solve():
    cell = make_cell("gpm", 3, seed=1)  # pm: the solver reduces the grid
    bands = band_structure(cell.image, nbands=6, cutoff=CUT, nk=NK, method="dense")
    assert len(bands.kpoints) < NK * NK
    from essl.photonics.bands import full_grid_freqs

    direct = solve_kpoints(crystal_operator(cell.image, CUT), official_kgrid(NK), 6, method="dense").freqs
    assert np.allclose(full_grid_freqs(bands), direct, rtol=1e-6, atol=1e-9)


def test_empty_lattice_matches_a_homogeneous_crystal_and_a_plain_sum():
    k = official_kgrid(NK)
    ref = np.sort([[np.hypot(kx + m, ky + n) for m in range(-3, 4) for n in range(-3, 4)] for kx, ky in k], 1)
    assert np.allclose(empty_lattice(k, 4.0, 8), ref[:, :8] / 2.0)
    img = np.full((32, 32), 4.0)
    freqs = solve_kpoints(crystal_operator(img, CUT), k, 8, method="dense").freqs
    assert np.allclose(freqs, empty_lattice(k, 4.0, 8), atol=1e-8)


def test_store_bands_writes_the_official_keys(tmp_path):
    spec = GenerationSpec(
        family="gpm", seed=4, store_bands=True, label=LabelConfig(cutoff=CUT, nk=NK, nbands=6, method="dense")
    )
    path = generate(spec, 1, 2, tmp_path, file_name="b.h5", progress=False)
    with h5py.File(path, "r") as f:
        for i in (1, 2):
            img, eps = f[f"unitcell/mpbepsimage/{i}"][()], float(f[f"unitcell/epsavg/{i}"][()])
            efreq, empty, diff = (f[f"mpbcal/{k}/{i}"][()] for k in ("efreq", "emptylattice", "eldiff"))
            assert efreq.shape == empty.shape == diff.shape == (NK * NK, 6) and efreq.dtype == np.float32
            direct = solve_kpoints(
                crystal_operator(img.astype(np.float64), CUT), official_kgrid(NK), 6, method="dense"
            ).freqs
            assert np.allclose(efreq, direct, rtol=1e-5, atol=1e-6)
            assert np.allclose(empty, empty_lattice(official_kgrid(NK), eps, 6), rtol=1e-6)
            assert np.allclose(diff, efreq - empty, atol=1e-6)
            assert f[f"mpbcal/wedge/kweights/{i}"][()].sum() == NK * NK
    data = load_phc(path, target="bands", nbands=4)
    assert data.y.shape == data.el.shape == data.eldiff.shape == (2, NK * NK * 4)
    with h5py.File(path, "r") as f:
        assert np.allclose(data.y[1].numpy(), f["mpbcal/efreq/2"][()][:, :4].ravel())


def test_fractional_error_is_calpercloss():
    true = np.array([[0.0, 0.5, 1.0], [0.2, 0.0, 0.4]])
    pred = np.array([[0.1, 0.4, 1.5], [0.3, 0.0, 0.4]])
    # official: |out - target| / target, inf and nan set to 0, mean over all entries
    expected = np.mean([0, 0.1 / 0.5, 0.5 / 1.0, 0.1 / 0.2, 0, 0])
    assert fractional_error(pred, true) == pytest.approx(expected)
    assert float(fractional_error(torch.tensor(pred), torch.tensor(true))) == pytest.approx(expected)


def _band_files(root, rng):
    """gpm pool (1..12) and test (7801..7804) cells with random band labels in the official layout."""
    with h5py.File(root / "mf1-sg3-tm.h5", "w") as f:
        for i in list(range(1, 13)) + list(range(7801, 7805)):
            img = rng.uniform(1, 20, (32, 32)).astype(np.float32)
            eps = float(img.mean())
            efreq = np.sort(rng.uniform(0.05, 1.0, (NK * NK, 6)), 1).astype(np.float32)
            efreq[12, 0] = 0.0  # Γ: a zero frequency, counted as 0 by the metric
            empty = empty_lattice(official_kgrid(NK), eps, 6).astype(np.float32)
            entries = {
                "unitcell/mpbepsimage": img,
                "unitcell/epsavg": np.float32(eps),
                "mpbcal/efreq": efreq,
                "mpbcal/emptylattice": empty,
                "mpbcal/eldiff": efreq - empty,
            }
            for key, value in entries.items():
                f[f"{key}/{i}"] = value


def test_finetune_predicts_band_structures(tmp_path, root):
    _band_files(tmp_path, np.random.default_rng(0))
    argv = [
        "phc",
        "finetune",
        "--scratch",
        "--family",
        "gpm",
        "--backbone",
        "phc_cnn_small",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
        "--epochs",
        "2",
        "--n-train",
        "8",
        "--seeds",
        "1",
        "--target",
        "bands",
        "--nbands",
        "4",
    ]
    assert essl_main(argv) == 0
    res = json.loads((tmp_path / "out" / "eval" / "phc-finetune-n8-e2-bands4.json").read_text())
    assert res["protocol"]["target"] == "bands" and "calpercloss" in res["protocol"]["metric"]
    assert res["data"]["n_test"] == 4 and len(res["per_seed"][0]["curve"]) == 3
    assert all(np.isfinite(res["per_seed"][0]["curve"]))
    # the metric of the evaluation loop: output + empty lattice against efreq, per entry
    from essl.data.photonics import load_labelled_splits

    test = load_labelled_splits("gpm", tmp_path, 8, target="bands", nbands=4).test
    out = torch.randn(4, NK * NK * 4) * 0.01

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return out[: len(x)] + 0 * self.p

    got = dos_error(Fixed(), test.x, test.y, test.el, batch=8, target="bands")
    pred, true = (out + test.el).numpy(), test.y.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.abs(pred - true) / true
    assert got == pytest.approx(np.where(np.isfinite(ref), ref, 0).mean(), rel=1e-5)
    # a DOS-only data folder: the band target says how to get the labels
    with pytest.raises(EsslError, match="--store-bands"):
        load_labelled_splits("gpm", root[0], 8, target="bands")
