"""What glibc's malloc settings cost essl's CPU training step: default against ``retain_freed_memory``.

:class:`essl.training.pretrain.Pretrainer` calls :func:`essl.runtime.retain_freed_memory` on the CPU (blocks up to
1 GiB from the heap, freed memory kept), because by default glibc unmaps every block above 32 MiB on ``free``
and the next step page-faults it in again. The setting is process-wide, so the two sides run in child processes
of their own, one after the other and alternating (``--rounds``), with ``ESSL_MALLOC=default`` turning it off
on one side. Each child builds the Pretrainer of a preset (``cifar10-esimclr``, or the demo's ``mnist5k-esimclr``)
on random images without the kNN monitor and the online probe,
runs one warm-up step and ``--steps`` timed ones, and reports each step's wall time, system CPU time and minor
page faults. Run:

    python benchmarks/bench_malloc.py [--preset cifar10-esimclr] [--batch 256] [--steps 6] [--rounds 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"retained (essl's default)": {}, "glibc default (ESSL_MALLOC=default)": {"ESSL_MALLOC": "default"}}


#: Preset → (image channels, image size) of its random images.
PRESETS = {"cifar10-esimclr": (3, 32), "mnist5k-esimclr": (1, 28)}


def child(preset: str, batch: int, steps: int, threads: int) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train_step import EsslStep, essl_config, write_npy_dataset

    from essl.runtime import retain_freed_memory

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    channels, size = PRESETS[preset]
    images = torch.randint(0, 256, (2 * batch, channels, size, size), dtype=torch.uint8)
    with tempfile.TemporaryDirectory(prefix="essl-bench-") as tmp:
        root = write_npy_dataset(Path(tmp) / "data", images)
        step = EsslStep(essl_config(root, batch, [], preset=preset), Path(tmp) / "run")
        step()
        rows = []
        for _ in range(steps):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            step()
            t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            rows.append({"s": t, "sys": r1.ru_stime - r0.ru_stime, "faults": r1.ru_minflt - r0.ru_minflt})
    print(json.dumps({"retained": retain_freed_memory(), "threads": torch.get_num_threads(), "steps": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="cifar10-esimclr", help="mnist5k-esimclr: the demo's")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per child, after one warm-up step")
    parser.add_argument("--rounds", type=int, default=2, help="children per side, alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.preset, args.batch, args.steps, args.threads)
        return
    rows: dict[str, list[dict]] = {mode: [] for mode in MODES}
    cmd = [
        sys.executable,
        __file__,
        "--child",
        *(f"--{k}={getattr(args, k)}" for k in ("preset", "batch", "steps", "threads")),
    ]
    print(f"{args.preset} step (essl Pretrainer), batch {args.batch}, 1 warm-up + {args.steps} timed steps per child")
    for r in range(args.rounds):
        for mode, env in MODES.items():
            env = {k: v for k, v in os.environ.items() if k != "ESSL_MALLOC"} | env
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode != 0:
                sys.exit(f"the {mode} child failed:\n{res.stderr[-3000:]}")
            out = json.loads(res.stdout.strip().splitlines()[-1])
            rows[mode] += out["steps"]
            print(
                f"round {r + 1}, {mode} ({out['threads']} thread(s), retained={out['retained']}): steps "
                + ", ".join(f"{s['s']:.2f}" for s in out["steps"])
                + " s; faults "
                + ", ".join(str(s["faults"]) for s in out["steps"])
            )
    print("\n| malloc | s/step (median) | system s/step | minor page faults/step |\n|---|---|---|---|")
    med = {}
    for mode, steps in rows.items():
        med[mode] = statistics.median(s["s"] for s in steps)
        sys_s = statistics.median(s["sys"] for s in steps)
        faults = statistics.median(s["faults"] for s in steps)
        print(f"| {mode} | {med[mode]:.2f} | {sys_s:.2f} | {faults:,.0f} |")
    a, b = MODES
    print(f"\nspeed-up, {a} / {b}: {med[b] / med[a]:.2f}x")


if __name__ == "__main__":
    main()
