"""TM plane-wave solver: known values, exact Fourier coefficients, velocities, fast paths."""

from __future__ import annotations

import numpy as np
import pytest

from essl.photonics.cells import make_cell
from essl.photonics.solver import (
    band_structure,
    crystal_operator,
    pixel_fourier_coefficients,
    plane_wave_orders,
    solve_kpoints,
)
from essl.photonics.symmetry import detect_point_group, kgrid, reduce_kgrid

M_POINT = [0.5, 0.5]
X_POINT = [0.5, 0.0]


def test_plane_wave_counts():
    assert [len(plane_wave_orders(m)) for m in (7, 10, 13)] == [149, 317, 529]


def test_pixel_fourier_coefficients_exact():
    rng = np.random.default_rng(0)
    img = rng.uniform(1, 20, size=(8, 8))
    # Direct integral of the piecewise-constant function over each pixel, for |m| > N/2 too.
    for m, n in [(0, 0), (1, 0), (3, -2), (9, 5), (-13, 17)]:
        direct = 0j
        for i in range(8):
            for j in range(8):
                ix = (
                    (np.exp(-2j * np.pi * m * (i + 1) / 8) - np.exp(-2j * np.pi * m * i / 8)) / (-2j * np.pi * m)
                    if m
                    else 1 / 8
                )
                iy = (
                    (np.exp(-2j * np.pi * n * (j + 1) / 8) - np.exp(-2j * np.pi * n * j / 8)) / (-2j * np.pi * n)
                    if n
                    else 1 / 8
                )
                direct += img[i, j] * ix * iy
        assert pixel_fourier_coefficients(img, np.array(m), np.array(n)) == pytest.approx(direct, abs=1e-12)


def test_rods_known_frequencies(rod_image):
    """Square lattice of rods eps = 8.9, r = 0.2a: f1(M) = 0.3224, f2(X) = 0.4425 (ref. 6)."""
    group = detect_point_group(rod_image)
    op = crystal_operator(rod_image, 10, group.inversion_centre)
    sol = solve_kpoints(op, np.array([M_POINT, X_POINT]), nbands=10, method="dense")
    assert sol.freqs[0, 0] == pytest.approx(0.3224, abs=1e-3)
    assert sol.freqs[1, 1] == pytest.approx(0.4425, abs=1e-3)


def test_uniform_cell_is_empty_lattice():
    img = np.full((32, 32), 4.0)
    sol = solve_kpoints(crystal_operator(img, 6), np.array([[0.1, 0.3]]), nbands=6)
    g = plane_wave_orders(6) + [0.1, 0.3]
    expect = np.sort(np.sqrt((g**2).sum(1)))[:6] / 2.0
    assert sol.freqs[0] == pytest.approx(expect, rel=1e-12)


def test_real_path_matches_complex_path():
    cell = make_cell("blob", 3, seed=1)
    img = np.roll(cell.image, (3, 8), axis=(0, 1))  # inversion centre away from the origin
    centre = detect_point_group(img).inversion_centre
    k = np.array([[0.13, -0.31], [0.0, 0.2], [0.44, 0.44]])
    real = solve_kpoints(crystal_operator(img, 6, centre), k, method="dense")
    cplx = solve_kpoints(crystal_operator(img, 6, None), k, method="dense")
    assert crystal_operator(img, 6, centre).binv.dtype == np.float64
    np.testing.assert_allclose(real.freqs, cplx.freqs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.abs(real.vels), np.abs(cplx.vels), atol=1e-8)


def test_inversion_centre_is_checked():
    cell = make_cell("gpm", 2, seed=1)
    with pytest.raises(ValueError, match="not inversion-symmetric"):
        crystal_operator(cell.image, 5, (0.0, 0.0))


def test_group_velocity_matches_finite_difference():
    cell = make_cell("p1", 4, seed=2)
    op = crystal_operator(cell.image, 6)
    k = np.array([0.17, -0.23])
    h = 1e-6
    v = solve_kpoints(op, k[None], method="dense").vels[0]
    for axis in (0, 1):
        dk = np.zeros(2)
        dk[axis] = h
        fp = solve_kpoints(op, (k + dk)[None], method="dense").freqs[0]
        fm = solve_kpoints(op, (k - dk)[None], method="dense").freqs[0]
        np.testing.assert_allclose(v[:, axis], (fp - fm) / (2 * h), atol=2e-6)


@pytest.mark.parametrize("family", ["gpm", "p1"])
def test_subspace_matches_dense(family):
    cell = make_cell(family, 5, seed=4)
    group = detect_point_group(cell.image)
    kpts, _ = reduce_kgrid(group.ops, 25)
    op = crystal_operator(cell.image, 7, group.inversion_centre)
    dense = solve_kpoints(op, kpts, method="dense")
    fast = solve_kpoints(op, kpts, method="subspace")
    np.testing.assert_allclose(fast.freqs, dense.freqs, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(fast.vels, dense.vels, atol=2e-4)
    assert fast.max_error_estimate <= 1e-5
    # Ritz values are upper bounds of the dense eigenvalues.
    assert np.all(fast.freqs >= dense.freqs - 1e-9)


def test_subspace_falls_back_to_dense_when_basis_is_poor():
    cell = make_cell("p1", 6, seed=4)
    kpts = kgrid(9)
    op = crystal_operator(cell.image, 6)
    fast = solve_kpoints(op, kpts, method="subspace", anchors=1, extra=0, rtol=1e-12)
    dense = solve_kpoints(op, kpts, method="dense")
    assert fast.n_dense > len(kpts) // 2
    np.testing.assert_allclose(fast.freqs, dense.freqs, rtol=1e-6, atol=1e-7)


def test_band_structure_reduction_and_weights(rod_image):
    bands = band_structure(rod_image, cutoff=5)
    assert bands.group == "p4mm" and len(bands.weights) == 91
    assert bands.weights.sum() == 625
    full = band_structure(rod_image, cutoff=5, symmetry="none")
    assert len(full.weights) == 625
    with pytest.raises(ValueError):
        band_structure(rod_image, symmetry="guess")
