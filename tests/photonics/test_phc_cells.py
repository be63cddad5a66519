"""Unit-cell families: symmetry they claim, ranges, metadata, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from essl.photonics.cells import FAMILIES, make_cell
from essl.photonics.symmetry import D4, GROUPS, apply_op, detect_point_group

CLAIMED = {"gpm": "pm", "blob": "p4mm", "cylinder": "p4mm", "p1": "p1"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_has_claimed_symmetry(family):
    claimed = GROUPS[FAMILIES[family].group]
    names = []
    for index in range(1, 9):
        cell = make_cell(family, index, seed=7)
        # Every claimed operation holds bit for bit about the origin corner (no translation) ...
        for op in claimed:
            assert np.array_equal(apply_op(cell.image, op), cell.image)
        # ... and the detector, which also tries translations, finds at least those.
        group = detect_point_group(cell.image)
        found = {tuple(op.ravel()) for op in group.ops}
        assert {tuple(op.ravel()) for op in claimed} <= found
        names.append(group.name)
    # Generic draws have exactly the claimed group, not more.
    assert names.count(CLAIMED[family]) >= 6


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ranges_and_metadata(family):
    for index in range(1, 6):
        cell = make_cell(family, index, seed=3)
        img = cell.image
        assert img.shape == (32, 32) and img.dtype == np.float32
        lo, hi = sorted((cell.eps_in, cell.eps_out))
        assert 1.0 <= lo and hi <= 20.0
        assert img.min() >= np.float32(lo) - 1e-5 and img.max() <= np.float32(hi) + 1e-5
        assert cell.epsavg == pytest.approx(float(img.astype(np.float64).mean()), rel=0, abs=0)
        assert 0.0 < cell.filling < 1.0
        if family != "cylinder":
            assert 0.01 <= cell.filling <= 0.99
            f = FAMILIES[family].max_order
            assert cell.coefficients.shape == (2 * f + 1, 2 * f + 1)
            # Area fraction of eps_out matches the nominal filling (anti-aliasing aside).
            frac_out = (img.astype(np.float64) - cell.eps_in).sum() / (cell.eps_out - cell.eps_in)
            assert frac_out / img.size == pytest.approx(cell.filling, abs=0.01)
        else:
            radius = -cell.level
            assert 0.0 <= radius <= 0.5
            assert cell.filling == pytest.approx(1 - np.pi * radius**2)


def test_anti_aliased_has_intermediate_pixels():
    cell = make_cell("blob", 2, seed=1)
    values = np.unique(cell.image)
    assert len(values) > 2  # interface pixels take mean permittivities


def test_reproducible_and_independent_of_order():
    a = [make_cell("gpm", i, seed=5).image for i in (1, 2, 3)]
    b = [make_cell("gpm", i, seed=5).image for i in (3, 2, 1)][::-1]
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(make_cell("gpm", 1, seed=5).image, make_cell("gpm", 1, seed=6).image)
    assert not np.array_equal(make_cell("gpm", 1, seed=5).image, make_cell("p1", 1, seed=5).image)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown cell family"):
        make_cell("hexagon", 1)


def test_detects_translated_and_rejects_broken_symmetry():
    cell = make_cell("blob", 4, seed=2)
    moved = np.roll(cell.image, (5, 11), axis=(0, 1))
    group = detect_point_group(moved)
    assert group.name == "p4mm" and group.inversion_centre is not None
    broken = moved.astype(np.float64).copy()
    broken[3, 7] += 1e-3
    assert detect_point_group(broken).name == "p1"
    # The inversion centre found is exact: inverting about it maps the image onto itself.
    c = np.asarray(group.inversion_centre) * 32  # pixels from the origin corner
    inverted = np.roll(apply_op(moved, D4[1]), (int(round(2 * c[0])), int(round(2 * c[1]))), axis=(0, 1))
    assert np.array_equal(inverted, moved)
