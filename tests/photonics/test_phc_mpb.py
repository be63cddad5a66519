"""Optional cross-check against MPB (``apt-get install mpb``); skipped when ``mpb`` is absent.

MPB is not installed in CI.  The check (MPB: Johnson and Joannopoulos, Opt. Express 8, 173, 2001): the
pixel image is nearest-neighbour upsampled 8x and shifted by half a pixel (MPB does not wrap
input images periodically), solved at resolution 64 with 2 extra bands (MPB can miss a band),
bands sorted per k-point, and the DOS built with our GGR on the same reduced k-grid.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from essl.photonics.cells import make_cell
from essl.photonics.dos import dos_label, dos_target, relative_l1
from essl.photonics.label import label_image
from essl.photonics.symmetry import detect_point_group, reduce_kgrid

MPB = shutil.which("mpb")
pytestmark = pytest.mark.skipif(MPB is None, reason="mpb binary not on PATH (optional: apt-get install mpb)")

CTL = """
(set! geometry-lattice (make lattice (size 1 1 no-size)))
(set! geometry (list))
(set! epsilon-input-file "eps.h5")
(set! resolution {resolution})
(set! num-bands {nbands})
(set! k-points (list {kpoints}))
(define (essl-dump which-band)
  (if (= which-band num-bands)
      (begin
        (print "essl-kpoint:")
        (for-each (lambda (f v) (print " " f " " (vector3-x v) " " (vector3-y v)))
                  freqs (compute-group-velocities))
        (print "\\n"))))
(run-tm essl-dump)
"""


def mpb_bands(image, kpoints, workdir, nbands=10, extra=2, resolution=64, upsample=8):
    """Frequencies and group velocities from MPB for a pixel image at the given k-points."""
    fine = np.kron(np.asarray(image, dtype=np.float64), np.ones((upsample, upsample)))
    fine = np.roll(fine, (upsample // 2, upsample // 2), axis=(0, 1))
    with h5py.File(workdir / "eps.h5", "w") as h5:
        h5["data"] = fine
    kp = " ".join(f"(vector3 {float(k[0])!r} {float(k[1])!r} 0)" for k in kpoints)
    (workdir / "run.ctl").write_text(CTL.format(resolution=resolution, nbands=nbands + extra, kpoints=kp))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [MPB, "run.ctl"], cwd=workdir, capture_output=True, text=True, env=env, timeout=600, check=True
    ).stdout
    rows = [
        np.array(line.split()[1:], dtype=float).reshape(-1, 3)
        for line in out.splitlines()
        if line.startswith("essl-kpoint:")
    ]
    assert len(rows) == len(kpoints)
    freqs = np.empty((len(rows), nbands))
    vels = np.empty((len(rows), nbands, 2))
    for i, row in enumerate(rows):
        order = np.argsort(row[:, 0])[:nbands]
        freqs[i], vels[i] = row[order, 0], row[order, 1:]
    return freqs, vels


def test_dos_agrees_with_mpb(tmp_path):
    """High-contrast GPM cell (eps 15.1 / 1.4): measured 0.16 % (0.03 % on a blob cell)."""
    cell = make_cell("gpm", 10, seed=1)
    group = detect_point_group(cell.image)
    kpts, weights = reduce_kgrid(group.ops, 25)
    freqs, vels = mpb_bands(cell.image, kpts, tmp_path)
    ours = label_image(cell.image)
    theirs = dos_label(freqs, vels, weights, cell.epsavg)
    err = relative_l1(dos_target(theirs, cell.epsavg)[None], dos_target(ours.dos, cell.epsavg)[None])
    print(f"PWE vs MPB DOS: {100 * err:.3f} %")
    assert err < 0.01, f"PWE vs MPB DOS differ by {100 * err:.2f} %"
