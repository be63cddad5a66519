"""Symmetry-reduced k-grid: orbit counts and weights."""

from __future__ import annotations

import numpy as np

from essl.photonics.symmetry import D4, GROUPS, kgrid, reduce_kgrid


def test_kgrid_matches_sibcl():
    k = kgrid(25)
    assert k.shape == (625, 2)
    assert np.isclose(k.min(), -0.48) and np.isclose(k.max(), 0.48)
    assert np.any(np.all(np.isclose(k, 0.0), axis=1))  # contains Gamma


def test_wedge_sizes():
    """p1: 313, pm: 169, p4mm: 91 points (reference section 7.1)."""
    for group, size in (("p1", 313), ("pm", 169), ("p4mm", 91)):
        kpts, weights = reduce_kgrid(GROUPS[group], 25)
        assert len(kpts) == size
        assert weights.sum() == 625


def test_orbits_cover_grid_once():
    kpts, weights = reduce_kgrid(D4, 25)
    full = {tuple(np.round(k * 50).astype(int)) for k in kgrid(25)}
    covered = {}
    for k, w in zip(kpts, weights):
        orbit = {tuple(np.round(s * (op @ k) * 50).astype(int)) for op in D4 for s in (1, -1)}
        assert len(orbit) == w
        for p in orbit:
            assert p not in covered
            covered[p] = True
    assert set(covered) == full
