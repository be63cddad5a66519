"""Fixtures of the photonics tests: one BLAS thread, a few reference unit cells, and tiny h5 files in the E-SSL
layout (``root``)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from essl.photonics.parallel import blas_single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Multi-threaded OpenBLAS is many times slower on the solver's small matrices."""
    with blas_single_thread():
        yield


def disc_image(radius: float, eps_in: float, eps_out: float = 1.0, res: int = 32, supersample: int = 8) -> np.ndarray:
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


W_LABEL = np.linspace(0, 1.2, 500)
N_UL, N_POOL, N_TEST = 16, 24, 8


def _cells(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Two-tone 32×32 permittivity images in [1, 20] (a random blob of eps_in in eps_out)."""
    out = []
    yy, xx = np.mgrid[0:32, 0:32]
    for _ in range(n):
        cy, cx, r = rng.uniform(0, 32), rng.uniform(0, 32), rng.uniform(4, 12)
        eps_in, eps_out = rng.uniform(1, 20, size=2)
        out.append(np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, eps_in, eps_out).astype(np.float32))
    return out


def write_h5(path, indices, labelled: bool, seed: int, size: int = 32, skip_key: str | None = None) -> dict:
    """Write cells at ``indices`` in the E-SSL layout; returns {index: (image, epsavg, dos)}."""
    rng = np.random.default_rng(seed)
    data = {}
    with h5py.File(path, "w") as f:
        for i, img in zip(indices, _cells(rng, len(indices))):
            if size != 32:
                img = img[:size, :size]
            eps = float(img.mean())
            dos = (2 * np.pi * W_LABEL * np.sqrt(eps) * rng.uniform(0.5, 1.5) + rng.uniform(0, 1, 500)).astype(
                np.float32
            )
            entries = {"unitcell/mpbepsimage": img, "unitcell/epsavg": np.float32(eps)}
            if labelled:
                entries["mpbcal/DOS"] = dos
            for key, value in entries.items():
                if key != skip_key:
                    f[f"{key}/{i}"] = value
            data[i] = (img, eps, dos)
    return data


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data folder with all five original file names (gpm test cells at 7801.., as in mf1-sg3-tm.h5)."""
    d = tmp_path_factory.mktemp("phc")
    files = {
        "ul_gpm": write_h5(d / "mf1-sg3-25k-ul-s99-tm.h5", range(1, N_UL + 1), False, 1),
        "ul_blob": write_h5(d / "sq-blob-ul-15k-tm.h5", range(1, N_UL + 1), False, 2),
        "gpm": write_h5(d / "mf1-sg3-tm.h5", list(range(1, N_POOL + 1)) + list(range(7801, 7801 + N_TEST)), True, 3),
        "blob": write_h5(d / "sq-blob-v3-tm.h5", range(1, N_POOL + 1), True, 4),
        "blob_test": write_h5(d / "sq-blob-test2k-tm.h5", range(1, N_TEST + 1), True, 5),
    }
    return d, files


@pytest.fixture
def h5_writer():
    """:func:`write_h5`, for tests that write files of their own."""
    return write_h5
