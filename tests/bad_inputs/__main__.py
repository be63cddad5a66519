"""``python -m tests.bad_inputs [-k TEXT] [-v]``: run every bad-input case and print the count by outcome.

Run it from the repository root (with ``PYTHONPATH=.`` when essl is not installed from this checkout). Each case
runs in its own temporary folder. ``-k`` keeps the cases whose id contains TEXT; ``-v`` explains every case that
is not a clear error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def all_cases() -> dict[str, list]:
    """Area (test module) → its CASES."""
    sys.path.insert(0, str(HERE.parent))  # the shared test helpers (tests/image_folders.py), as under pytest
    out = {}
    for path in sorted(HERE.glob("test_*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        if hasattr(module, "CASES"):
            out[path.stem.removeprefix("test_")] = list(module.CASES)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bad_inputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only cases whose id contains this text")
    parser.add_argument("-v", "--verbose", action="store_true", help="explain every case that is not clear")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from .harness import OUTCOMES, run_case

    totals: Counter = Counter()
    rows = []
    for area, cases in all_cases().items():
        counts: Counter = Counter()
        for case in cases:
            if args.k not in case.id:
                continue
            with tempfile.TemporaryDirectory(prefix="essl-case-") as tmp:
                r = run_case(case, Path(tmp) / "ws")
            counts[r.outcome] += 1
            mark = "" if r.outcome == "clear" else f"  [{r.outcome}]" + (f" open: {case.open}" if case.open else "")
            print(f"{area:12s} {case.id}{mark}", flush=True)
            if args.verbose and r.outcome != "clear":
                print(r.explain(), flush=True)
        totals.update(counts)
        if counts:
            rows.append((area, counts))
    print()
    print(f"{'area':12s} " + " ".join(f"{o:>10s}" for o in OUTCOMES) + f" {'total':>7s}")
    for area, counts in rows + [("all", totals)]:
        print(f"{area:12s} " + " ".join(f"{counts[o]:10d}" for o in OUTCOMES) + f" {sum(counts.values()):7d}")
    return 0 if set(totals) <= {"clear"} else 1


if __name__ == "__main__":
    sys.exit(main())
