"""Fixtures of the photonics tests: one BLAS thread, and a few reference unit cells."""

from __future__ import annotations

import numpy as np
import pytest

from essl.photonics.parallel import blas_single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Multi-threaded OpenBLAS is many times slower on the solver's small matrices."""
    with blas_single_thread():
        yield


def disc_image(radius: float, eps_in: float, eps_out: float = 1.0, res: int = 32,
               supersample: int = 8) -> np.ndarray:
    """Anti-aliased image of a rod centred in the cell (pixel = mean of sub-pixel samples)."""
    n = res * supersample
    x = (np.arange(n) + 0.5) / n - 0.5
    inside = (x[:, None] ** 2 + x[None, :] ** 2) < radius**2
    frac = inside.reshape(res, supersample, res, supersample).mean(axis=(1, 3))
    return eps_out + (eps_in - eps_out) * frac


@pytest.fixture(scope="session")
def rod_image() -> np.ndarray:
    """The textbook TM crystal: rods eps = 8.9, r = 0.2 a, in air (Joannopoulos et al.)."""
    return disc_image(0.2, 8.9)
