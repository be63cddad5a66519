"""Benchmark: seconds per labelled unit cell, and DOS error against a converged PWE result.

For each cell family it draws ``--cells`` random cells (seed ``--seed``), labels them with the
default label definition (``LabelConfig()``: M = 10, 317 plane waves, 25 x 25 grid reduced by
the verified symmetry) on one core, and compares the E-SSL target ``y = DOS[:400]/sqrt(epsavg)``
with a converged reference (``--ref-cutoff``, default M = 16, 797 plane waves) using the E-SSL
metric (relative L1 over points 100..399, rdangovs/essl ``photonics/utils.py``).  The "hard" rows
use the same level sets with the contrast forced to eps 20 / 1 and 1 / 20, the worst case for
the cutoff.  With ``--check-dense`` it also reports how far the default (subspace) eigensolver is
from dense eigensolves at the same cutoff.

Run (the script pins BLAS to one thread itself)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_phc_label.py

Timings are CPU seconds of this (single-threaded) process, which are robust to other jobs on
the machine; wall seconds are printed next to them.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from essl.photonics.cells import FAMILIES, make_cell  # noqa: E402
from essl.photonics.dos import dos_target, relative_l1  # noqa: E402
from essl.photonics.label import LabelConfig, label_image  # noqa: E402
from essl.photonics.parallel import blas_single_thread  # noqa: E402
from essl.photonics.solver import plane_wave_orders  # noqa: E402


def _target(lab) -> np.ndarray:
    return dos_target(lab.dos, lab.epsavg)[None]


def _timed(image: np.ndarray, config: LabelConfig) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    lab = label_image(image, config)
    return lab, time.process_time() - cpu, time.perf_counter() - wall


def _cases(family: str, cells: int, seed: int, hard: bool) -> list[tuple[str, np.ndarray]]:
    out = []
    for index in range(1, cells + 1):
        cell = make_cell(family, index, seed=seed)
        if not hard:
            out.append((f"{index}", cell.image.astype(np.float64)))
            continue
        frac = (cell.image.astype(np.float64) - cell.eps_out) / (cell.eps_in - cell.eps_out)
        out.append((f"{index} 20/1", 1.0 + 19.0 * frac))
        out.append((f"{index} 1/20", 20.0 - 19.0 * frac))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["gpm", "blob", "p1", "cylinder"], choices=sorted(FAMILIES))
    parser.add_argument("--cells", type=int, default=4, help="random cells per family [4]")
    parser.add_argument("--hard-cells", type=int, default=2, help="GPM level sets relabelled at eps 20/1 and 1/20 [2]")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--cutoff", type=float, default=10.0, help="default accuracy M [10]")
    parser.add_argument("--ref-cutoff", type=float, default=16.0, help="converged M [16]")
    parser.add_argument(
        "--check-dense", action="store_true", help="also compare with dense eigensolves at the default M"
    )
    args = parser.parse_args()

    config = LabelConfig(cutoff=args.cutoff)
    ref_config = replace(config, cutoff=args.ref_cutoff)
    print(
        f"default: M={args.cutoff:g} ({len(plane_wave_orders(args.cutoff))} plane waves), "
        f"{config.nk}x{config.nk} grid, {config.nbands} bands, method={config.method}; "
        f"reference: M={args.ref_cutoff:g} ({len(plane_wave_orders(args.ref_cutoff))} plane "
        f"waves); 1 BLAS thread"
    )
    header = (
        f"{'family':<10}{'cell':>9}{'group':>6}{'k':>5}{'dense':>6}{'cpu s':>8}"
        f"{'wall s':>8}{'err vs ref %':>14}" + ("  dense cpu s  err vs dense" if args.check_dense else "")
    )
    rows: list[tuple[str, float, float]] = []
    jobs = [(fam, False) for fam in args.families]
    if args.hard_cells > 0:
        jobs.append(("gpm", True))
    with blas_single_thread():
        label_image(np.full((32, 32), 2.0), config)  # warm-up (imports, caches)
        print(header)
        for family, hard in jobs:
            ncells = args.hard_cells if hard else args.cells
            name = f"{family}-hard" if hard else family
            for tag, image in _cases(family, ncells, args.seed, hard):
                lab, cpu, wall = _timed(image, config)
                ref = label_image(image, ref_config)
                err = float(relative_l1(_target(lab), _target(ref)))
                line = (
                    f"{name:<10}{tag:>9}{lab.bands.group:>6}{len(lab.bands.weights):>5}"
                    f"{lab.bands.n_dense:>6}{cpu:>8.3f}{wall:>8.3f}{100 * err:>14.3f}"
                )
                if args.check_dense:
                    dense, dense_cpu, _ = _timed(image, replace(config, method="dense"))
                    line += f"{dense_cpu:>13.3f}  {float(relative_l1(_target(lab), _target(dense))):.1e}"
                print(line, flush=True)
                rows.append((name, cpu, err))
    print("\nsummary (per labelled cell, one core)")
    print(f"{'family':<10}{'cells':>6}{'mean cpu s':>12}{'max cpu s':>11}{'mean err %':>12}{'max err %':>11}")
    for name in dict.fromkeys(r[0] for r in rows):
        cpu = np.array([r[1] for r in rows if r[0] == name])
        err = np.array([r[2] for r in rows if r[0] == name])
        print(
            f"{name:<10}{len(cpu):>6}{cpu.mean():>12.3f}{cpu.max():>11.3f}"
            f"{100 * err.mean():>12.3f}{100 * err.max():>11.3f}"
        )


if __name__ == "__main__":
    main()
