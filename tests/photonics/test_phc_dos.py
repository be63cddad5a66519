"""GGR DOS, the mpbcal/DOS label, and the E-SSL target/metric helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from essl.photonics.cells import make_cell
from essl.photonics.dos import (
    _trapezoid_cdf,
    dos_label,
    dos_target,
    empty_lattice,
    ggr_dos,
    label_frequencies,
    relative_l1,
)
from essl.photonics.label import LabelConfig, label_image
from essl.photonics.solver import band_structure


def test_trapezoid_antiderivative_matches_numerical_integral():
    h = 0.02
    rng = np.random.default_rng(1)
    for v1, v2 in [(0.7, 0.3), (0.5, 0.5), (0.4, 0.0), (0.0, 0.0), *rng.uniform(0, 1, (5, 2))]:
        v1, v2 = max(v1, v2), min(v1, v2)
        # Monte-Carlo-free check: CDF of v1*qx + v2*qy for q uniform on [-h, h]^2, on a fine grid.
        q = (np.arange(2000) + 0.5) / 2000 * 2 * h - h
        s = (v1 * q[:, None] + v2 * q[None, :]).ravel()
        for d in np.linspace(-h * (v1 + v2) - 1e-3, h * (v1 + v2) + 1e-3, 9):
            exact = _trapezoid_cdf(np.array([d]), h, np.array([v1]), np.array([v2]))[0]
            assert exact == pytest.approx(4 * h * h * np.mean(s <= d), abs=4 * h * h * 2e-3)


def test_bins_nonnegative_and_weight_is_band_count():
    # Tiny but nonzero velocity components (as on mirror lines) must not create negative bins.
    freqs = np.array([[0.0, 0.31, 0.31000001, 0.5]])
    vels = np.array([[[0.0, 0.0], [1e-16, 0.4], [0.3, -2e-17], [0.2, 0.1]]])
    centres, dos = ggr_dos(freqs, vels, np.array([625.0]), nk=25)
    assert dos.min() >= 0
    assert dos.sum() * (centres[1] - centres[0]) == pytest.approx(4.0 / 625 * 625, rel=1e-12)
    # Real band data from a mirror-symmetric cell: every bin >= 0, total weight = 10 bands.
    cell = make_cell("gpm", 3, seed=2)
    bands = band_structure(cell.image, cutoff=5)
    centres, dos = ggr_dos(bands.freqs, bands.vels, bands.weights)
    assert dos.min() >= 0
    assert dos.sum() * (centres[1] - centres[0]) == pytest.approx(10.0, rel=1e-12)


def test_uniform_cell_gives_empty_lattice():
    """y = 2 pi w within 0.1 % on points 100..399, for several permittivities (section 7.3)."""
    el = empty_lattice()
    for eps in (1.0, 4.0, 13.0):
        lab = label_image(np.full((32, 32), eps))
        y = dos_target(lab.dos, eps)
        np.testing.assert_allclose(y[100:400], el[100:400], rtol=1e-3)


def test_rod_crystal_dos_vanishes_in_gap(rod_image):
    lab = label_image(rod_image)
    w = label_frequencies()
    in_gap = (w >= 0.485) & (w <= 0.595)  # TM gap 0.455..0.625 in w = f sqrt(epsavg), less 0.03
    below = (w >= 0.40) & (w <= 0.45)
    assert lab.dos[in_gap].max() < 0.01
    assert lab.dos[below].max() > 5.0


@pytest.mark.parametrize("family", ["gpm", "blob"])
def test_symmetry_reduced_dos_equals_full_grid(family):
    cell = make_cell(family, 2, seed=9)
    reduced = band_structure(cell.image, cutoff=5)
    full = band_structure(cell.image, cutoff=5, symmetry="none")
    assert len(reduced.weights) < len(full.weights)
    a = dos_label(reduced.freqs, reduced.vels, reduced.weights, cell.epsavg)
    b = dos_label(full.freqs, full.vels, full.weights, cell.epsavg)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * b.max())


def test_dos_converges_in_cutoff():
    """High-contrast (eps 20 / 1) C4v cell: DOS at M = 10 vs M = 13 differs by < 0.3 %."""
    cell = make_cell("blob", 2, seed=0)
    frac = (cell.image.astype(np.float64) - cell.eps_out) / (cell.eps_in - cell.eps_out)
    img = 1.0 + 19.0 * frac
    a = label_image(img, LabelConfig(cutoff=10))
    b = label_image(img, LabelConfig(cutoff=13))
    err = relative_l1(dos_target(a.dos, a.epsavg)[None], dos_target(b.dos, b.epsavg)[None])
    assert err < 3e-3


def test_target_and_metric_helpers():
    rng = np.random.default_rng(0)
    dos = rng.uniform(0.1, 5, size=(3, 500)).astype(np.float32)
    eps = np.array([1.0, 4.0, 9.0])
    y = dos_target(dos, eps)
    assert y.shape == (3, 400)
    np.testing.assert_allclose(y[1], dos[1, :400] / 2)
    yt = dos_target(torch.from_numpy(dos), torch.from_numpy(eps).float())
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-6)
    np.testing.assert_allclose(empty_lattice(), 2 * np.pi * np.linspace(0, 1.2, 500)[:400], rtol=1e-6)
    pred = y * 1.1
    assert relative_l1(pred, y) == pytest.approx(0.1, rel=1e-5)
    assert float(relative_l1(torch.from_numpy(pred), torch.from_numpy(y))) == pytest.approx(0.1, rel=1e-5)
    # Only points 100..399 count.
    pred[:, :100] = 0
    assert relative_l1(pred, y) == pytest.approx(0.1, rel=1e-5)
