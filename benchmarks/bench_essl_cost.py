"""Per-step cost of each E- variant relative to its base method on the CIFAR-10 presets, measured side by side.

For every method (``--methods simclr,simsiam,byol,vicreg,mocov3``) three configurations of its CIFAR-10 preset are
timed: the base (``cifar10-<m>``), the E- variant as the paper runs it (every rotation of every 16-px crop: 4
crops per image), and the sampled form (``samples: 1``: one uniformly drawn rotation per crop). The E- variant is
the base preset plus the rotation task of ``cifar10-esimclr`` (λ does not change the cost), so the two differ only
by the prediction branch. A step is the whole training step of ``essl pretrain``: augmentation of the views and
crops from uint8 images on the device, forward under essl's default precision, backward, optimiser step, and the
momentum update of the target network for BYOL and MoCo v3.

The configurations are timed in interleaved rounds (base, E-, sampled, base, E-, …) so that a change in the
machine's load hits all of them alike; the median step time of each is printed with its ratio to the base and
the pixel-weighted backbone passes per image (:mod:`essl.training.cost`). Images are random uint8 (the work per
image is the same as on CIFAR-10). Run:

    python benchmarks/bench_essl_cost.py [--methods ...] [--batch 64] [--rounds 3] [--warmup 1] [--threads 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

from essl.augmentation import Normalize, build_view, view_recipe
from essl.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from essl.groups import make_group
from essl.runtime import autocast_context, resolve_precision
from essl.training.config import load_config
from essl.training.cost import backbone_passes, passes_text
from essl.training.model import ESSLModel
from essl.training.optim import build_optimizer

PREDICTION = load_config("cifar10-esimclr").equivariance[0]  # rotation, 16-px crops, LayerNorm MLP head


def configurations(method: str, batch: int) -> dict[str, object]:
    base = dataclasses.replace(load_config(f"cifar10-{method}"), batch_size=batch)
    e_full = dataclasses.replace(base, equivariance=[dataclasses.replace(PREDICTION, samples=0)])
    e_sampled = dataclasses.replace(base, equivariance=[dataclasses.replace(PREDICTION, samples=1)])
    return {"base": base, "E- (all 4 rotations)": e_full, "E- sampled (1 rotation)": e_sampled}


class Step:
    """One configuration's model, optimiser and augmentations; ``__call__`` runs one training step."""

    def __init__(self, cfg, dtype: torch.dtype):
        torch.manual_seed(0)
        self.cfg, self.dtype = cfg, dtype
        self.model = ESSLModel(cfg, 3).to(memory_format=torch.channels_last).train()
        self.optimizer = build_optimizer(self.model, cfg, cfg.lr * cfg.batch_size / 256)
        self.views = [build_view(view_recipe(v), 3) for v in cfg.views]
        self.tasks = [(make_group(t.group), build_view(view_recipe(t.view), 3), t.samples) for t in cfg.equivariance]
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)

    def __call__(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            x1, x2 = (self.normalize(v(x)).contiguous(memory_format=torch.channels_last) for v in self.views)
            predictions = []
            for group, view, samples in self.tasks:
                crops = view(x)
                xg, g = group.sample(crops, repeats=samples) if samples else group.orbit(crops)
                predictions.append((self.normalize(xg).contiguous(memory_format=torch.channels_last), g))
        with autocast_context(torch.device("cpu"), self.dtype):
            loss = self.model(x1, x2, predictions)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.model.target is not None:
            self.model.update_target(self.cfg.target_momentum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="simclr,simsiam,byol,vicreg,mocov3")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = resolve_precision("auto", torch.device("cpu"))
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {str(dtype).replace('torch.', '')} autocast, channels_last, batch {args.batch}"
    )
    x = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)
    print("| method | configuration | backbone passes / image / step | median step time | × base |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        cfgs = configurations(method, args.batch)
        steps = {name: Step(cfg, dtype) for name, cfg in cfgs.items()}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(args.warmup + args.rounds):
            for name, step in steps.items():
                t0 = time.perf_counter()
                step(x)
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
