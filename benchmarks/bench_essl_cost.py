"""Per-step cost of each E- variant relative to its base method on the CIFAR-10 presets (or the MNIST-5k ones
of the demo, ``--family mnist5k``), measured side by side.

For every method (``--methods simclr,simsiam,byol,vicreg,mocov3``) three configurations of its CIFAR-10 preset are
timed: the base (``cifar10-<m>``), the E- variant as the paper runs it (every rotation of every 16-px crop: 4
crops per image), and the sampled form (``samples: 1``: one uniformly drawn rotation per crop). The E- variant is
the base preset plus the rotation task of ``cifar10-esimclr`` (λ does not change the cost), so the two differ only
by the prediction branch. A step is :meth:`essl.training.pretrain.Pretrainer.train_step` itself, the code ``essl pretrain`` runs
(augmentation of the views and crops from uint8 images on the device, forward under the preset's precision,
backward, optimiser step, and the momentum update of the target network for BYOL and MoCo v3), on a Pretrainer
built over a ``dataset=npy`` folder of random images in a temporary folder.

The configurations are timed in interleaved rounds (base, E-, sampled, base, E-, …) so that a change in the
machine's load hits all of them alike; the median step time of each is printed with its ratio to the base and
the pixel-weighted backbone passes per image (:mod:`essl.training.cost`). Images are random uint8 (the work per
image is the same as on CIFAR-10). Run:

    python benchmarks/bench_essl_cost.py [--methods ...] [--batch 64] [--rounds 3] [--warmup 1] [--threads 0]
    python benchmarks/bench_essl_cost.py --family mnist5k --methods simclr --batch 256   # the demo's presets

With ``--family mnist5k`` the presets are ``mnist5k-<m>``, the images 1×28×28 and the task that of
``mnist5k-esimclr`` (four rotations of a 20-px crop).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_train_step import EsslStep, write_npy_dataset

from essl.runtime import resolve_precision
from essl.training.config import PretrainConfig, load_config
from essl.training.cost import backbone_passes, passes_text

#: Preset family → (image channels, image size).
FAMILIES = {"cifar10": (3, 32), "mnist5k": (1, 28)}


def configurations(method: str, batch: int, data_root: Path, family: str = "cifar10") -> dict[str, PretrainConfig]:
    settings = ["dataset=npy", f"data_root={data_root}", f"batch_size={batch}", "knn_every=0", "online_probe=false"]
    base = load_config(f"{family}-{method}", settings)
    # the paper's task: rotations of 16-px crops (CIFAR-10); the demo's: of 20-px crops (MNIST-5k)
    prediction = load_config(f"{family}-esimclr").equivariance[0]
    e_full = dataclasses.replace(base, equivariance=[dataclasses.replace(prediction, samples=0)])
    e_sampled = dataclasses.replace(base, equivariance=[dataclasses.replace(prediction, samples=1)])
    return {"base": base, "E- (all 4 rotations)": e_full, "E- sampled (1 rotation)": e_sampled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="simclr,simsiam,byol,vicreg,mocov3")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--family", choices=FAMILIES, default="cifar10", help="preset family (default cifar10)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = resolve_precision("auto", torch.device("cpu"))
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {str(dtype).replace('torch.', '')} autocast, channels_last, batch {args.batch}"
    )
    channels, size = FAMILIES[args.family]
    images = torch.randint(0, 256, (4 * args.batch, channels, size, size), dtype=torch.uint8)
    tmp = tempfile.TemporaryDirectory(prefix="essl-bench-")
    root = write_npy_dataset(Path(tmp.name) / "data", images)
    print("| method | configuration | backbone passes / image / step | median step time | × base |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        cfgs = configurations(method, args.batch, root, args.family)
        if args.threads:
            cfgs = {name: dataclasses.replace(cfg, num_threads=args.threads) for name, cfg in cfgs.items()}
        steps = {name: EsslStep(cfg, Path(tmp.name) / f"{method}-{i}") for i, (name, cfg) in enumerate(cfgs.items())}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(args.warmup + args.rounds):
            if r == args.warmup:  # the thread tuners' first probes belong to the warm-up
                for step in steps.values():
                    while not step.settled:
                        step()
            for name, step in steps.items():
                t0 = time.perf_counter()
                step()
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["base"])
        for name, cfg in cfgs.items():
            t = statistics.median(times[name])
            print(
                f"| {method} | {name} | {passes_text(backbone_passes(cfg))} | {t:.2f} s | {t / base:.2f} |", flush=True
            )


if __name__ == "__main__":
    main()
