"""GPU readiness check: the training loop of ``cifar10-esimclr`` on a CUDA machine, in every precision and launch mode.

Runs ``steps`` optimisation steps (default 200) of the ``cifar10-esimclr`` preset (CIFAR ResNet-18, batch 512,
E-SimCLR with four rotations of 16-px crops) on synthetic uint8 32-px images (a ``dataset=npy`` folder written to
a temporary directory: the work per image is that of CIFAR-10), through :meth:`Pretrainer.train_step`, the step
the training loop runs, in each configuration:

- ``bf16``: bf16 autocast (where the GPU supports it);
- ``fp16``: fp16 autocast with the gradient scaler;
- both again with ``compile=true`` (``torch.compile`` of the model);
- with two or more GPUs: ``torchrun --nproc_per_node=2`` with SyncBatchNorm and DDP, bf16 (global batch 512).

Each configuration runs in its own process (clean peak-memory counters and compile caches) and prints one JSON
line; the script prints one table: images/s over the steps after the first 20, peak GPU memory
(``torch.cuda.max_memory_allocated``, the largest rank), and seconds from the start of the process to the end of
the first step (model build, data, cuDNN autotuning, compilation). Every step's losses stay on the GPU; they are
read once at the end and checked to be finite.

    python benchmarks/gpu_check.py [--steps 200] [--batch 512]

Without CUDA it says so and exits 0. ``--dry-run`` runs the same code on the CPU with a tiny budget (3 steps,
batch 16, fp32, no torchrun) to check the script itself; the test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()  # "seconds to first step" counts from here (imports included)

import numpy as np  # noqa: E402
import torch  # noqa: E402

WARMUP = 20  # steps excluded from images/s (autotuning, compilation, allocator growth)


def configurations(dry_run: bool, gpus: int) -> list[dict]:
    if dry_run:
        return [{"name": "cpu fp32 (dry run)", "precision": "fp32", "compile": False, "procs": 1}]
    out = []
    if torch.cuda.is_bf16_supported():
        out += [
            {"name": "bf16", "precision": "bf16", "compile": False, "procs": 1},
            {"name": "bf16 + compile", "precision": "bf16", "compile": True, "procs": 1},
        ]
    out += [
        {"name": "fp16 + scaler", "precision": "fp16", "compile": False, "procs": 1},
        {"name": "fp16 + scaler + compile", "precision": "fp16", "compile": True, "procs": 1},
    ]
    if gpus >= 2:
        best = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        out.append({"name": f"torchrun 2 GPUs, SyncBN, {best}", "precision": best, "compile": False, "procs": 2})
    return out


def write_synthetic(folder: Path, images: int, seed: int = 0) -> None:
    """Random CIFAR-sized uint8 images (N, 3, 32, 32) with labels, as a dataset=npy folder."""
    (folder / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(folder / "train" / "images.npy", rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8))
    np.save(folder / "train" / "labels.npy", rng.integers(0, 10, images))


def run_one(args: argparse.Namespace) -> dict:
    """One configuration, in this process (or in each torchrun worker): time ``steps`` training steps."""
    from essl.training.config import load_config
    from essl.training.online_probe import epoch_labels
    from essl.training.pretrain import Pretrainer

    device = "cpu" if args.dry_run else "cuda"
    overrides = [
        "dataset=npy",
        f"data_root={args.data}",
        f"batch_size={args.batch}",
        f"precision={args.precision}",
        f"compile={'true' if args.compile else 'false'}",
        f"device={device}",
        "knn_every=0",
        f"epochs={max(1, -(-args.steps * args.batch // args.images))}",
        "warmup_epochs=0",
        "workers=0",
    ]
    cfg = load_config("cifar10-esimclr", overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Pretrainer(cfg, Path(run_dir), progress=False)
        trainer.net.train()
        steps_per_epoch = len(trainer.batches)
        probe = trainer.probe is not None  # the online linear probe trains alongside, as in `essl pretrain`
        batches = (
            (x, epoch_labels(trainer.batches, trainer.labels, epoch)[i] if probe else None)
            for epoch in range(cfg.epochs)
            for i, x in enumerate(trainer.batches.epoch(epoch))
        )
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        losses = []
        first = timed_from = None
        for step in range(args.steps):
            if step == min(WARMUP, args.steps - 1):
                sync()
                timed_from = (time.perf_counter(), step)
            x, labels = next(batches)
            losses.append(trainer.train_step(x, step % (steps_per_epoch * cfg.epochs), labels)["loss"].detach())
            if step == 0:
                sync()
                first = time.perf_counter() - START
        sync()
        t_end = time.perf_counter()
        finite = bool(torch.isfinite(torch.stack(losses)).all())
    timed_steps = args.steps - timed_from[1]
    world = trainer.denv.world_size
    return {
        "images_per_s": timed_steps * args.batch / (t_end - timed_from[0]),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "first_step_s": first,
        "finite": finite,
        "world_size": world,
        "rank": trainer.denv.rank,
        "precision": str(trainer.dtype).removeprefix("torch."),
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def launch(conf: dict, args: argparse.Namespace, data: Path) -> list[dict]:
    """Run one configuration in fresh processes and collect each rank's JSON line."""
    one = (
        [
            __file__,
            "--one",
            "--data",
            str(data),
            "--images",
            str(args.images),
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--precision",
            conf["precision"],
        ]
        + (["--compile"] if conf["compile"] else [])
        + (["--dry-run"] if args.dry_run else [])
    )
    if conf["procs"] > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={conf['procs']}", *one]
    else:
        cmd = [sys.executable, *one]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")])
        ),
    }
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    rows = [json.loads(line.removeprefix("RESULT ")) for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    if res.returncode or not rows:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return [{"error": f"exit {res.returncode}: {' | '.join(tail)}"}]
    return rows


def table(results: list[tuple[dict, list[dict]]]) -> str:
    lines = [
        "| configuration | images/s | peak memory (GiB) | s to first step | losses finite |",
        "|---|---|---|---|---|",
    ]
    for conf, rows in results:
        if "error" in rows[0]:
            lines.append(f"| {conf['name']} | failed: {rows[0]['error']} | | | |")
            continue
        ips = rows[0]["images_per_s"]  # rank 0's rate counts the global batch
        peak = "-" if rows[0]["peak_gib"] is None else f"{max(r['peak_gib'] for r in rows):.2f}"
        first = max(r["first_step_s"] for r in rows)
        finite = all(r["finite"] for r in rows)
        rate = f"{ips:,.0f}" if ips >= 100 else f"{ips:.3g}"
        lines.append(f"| {conf['name']} | {rate} | {peak} | {first:.1f} | {'yes' if finite else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=512, help="global batch (the preset's 512)")
    p.add_argument("--images", type=int, default=51_200, help="synthetic training images (100 steps per epoch)")
    p.add_argument("--dry-run", action="store_true", help="CPU, 3 steps, batch 16: check the script itself")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:  # a worker: one configuration
        result = run_one(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if args.dry_run:
        args.steps, args.batch, args.images = 3, 16, 64
    elif not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was measured. Run it "
            "on a machine with a GPU, or pass --dry-run to check the script on the CPU."
        )
        return 0
    gpus = 0 if args.dry_run else torch.cuda.device_count()
    header = "CPU dry run" if args.dry_run else f"{gpus} × {torch.cuda.get_device_name()}"
    print(
        f"gpu_check: cifar10-esimclr, {args.steps} steps, global batch {args.batch}, synthetic 32-px images; "
        f"{header}; torch {torch.__version__}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic"
        write_synthetic(data, args.images)
        for conf in configurations(args.dry_run, gpus):
            rows = launch(conf, args, data)
            results.append((conf, rows))
            print(f"  {conf['name']}: {'failed' if 'error' in rows[0] else 'done'}", flush=True)
    print(table(results))
    if gpus == 1:
        print("(one GPU: the 2-process torchrun SyncBatchNorm check needs two or more)")
    return 1 if any("error" in rows[0] or not all(r["finite"] for r in rows) for _, rows in results) else 0


if __name__ == "__main__":
    sys.exit(main())
