"""Throughput of essl's real E-SimCLR training step (CIFAR-10 preset) against an official-style baseline.

Both sides run the same model (CIFAR ResNet-18, projector 512-2048-2048, rotation head 512-2048-2048-4), the
same batch (256 images: two 32-px views plus the four rotations of a 16-px crop, i.e. 512 + 1024 images through
the backbone), the same loss (cross-view InfoNCE τ=0.5 + 0.4·CE) and the same SGD step; both start from uint8
CIFAR-sized images in memory and end after the optimiser step.

- **essl**: :meth:`essl.training.pretrain.Pretrainer.train_step` itself, the code ``essl pretrain`` runs, on a
  Pretrainer built from the ``cifar10-esimclr`` preset over a ``dataset=npy`` folder of random images written to a
  temporary folder (batches come from the Pretrainer's own batch source). Augmentation is batched and per-sample
  random with kornia on the device; precision and channels_last are the preset's (``auto``: bf16 autocast and
  channels_last where the CPU supports them).
- **baseline**: built the way the official code (rdangovs/essl cifar10/main.py) does it: per-image PIL
  augmentation (RandomResizedCrop, flip, ColorJitter, grayscale, ToTensor, Normalize; written here with Pillow
  because torchvision is not a dependency) in DataLoader workers, fp32, NCHW, rotations by ``torch.rot90``, every
  3×3 layer a plain ``nn.Conv2d``. It runs in a spawned process of its own, one step per round, so that glibc's
  malloc keeps its defaults there (essl's Pretrainer changes them in its process:
  :func:`essl.runtime.retain_freed_memory`).
- **prediction branch**: essl's SimCLR step (the same preset without the rotation task) is timed in the same
  interleaved rounds; the branch's share of the E-SimCLR step is ``1 − t(SimCLR) / t(E-SimCLR)``.

Besides images/s and the ratio, it prints the FLOPs of one essl step (``torch.utils.flop_counter``: convolutions
and matrix products, forward and backward) and the fraction of a bf16 (or the step's precision) matmul peak
measured in the same run, the baseline's fraction of a float32 matmul peak, and a ceiling: the ratio to the
baseline that a step would reach if all its FLOPs ran at the faster of that matmul and the fastest bf16 3×3
convolution forward of layers 2-4 (a practical upper bound, on the machine at hand, for any change that keeps the
paper's arithmetic, the same convolutions computed directly; BatchNorm and the other memory-bound operators come on
top). ``--profile N`` adds a torch.profiler table of N essl steps, by operator and by operator and input shape
(which separates the layers and the two branches). Images are random uint8: the work per image is the same as on
CIFAR-10. Run:

    python benchmarks/bench_train_step.py [--steps 6] [--warmup 10] [--batch 256] [--workers 2] [--profile 0]
    python benchmarks/bench_train_step.py --set compile=true   # any preset override for the essl side
    python benchmarks/bench_train_step.py --variant fp32:precision=fp32   # another essl side, same rounds
    python benchmarks/bench_train_step.py --before-2x2   # and essl with its 2×2-map layers as convolutions
    python benchmarks/bench_train_step.py --no-baseline --op-times   # time per aten operator, page faults

With ``--set tune_threads=true`` each essl side's :class:`essl.runtime.ThreadTuner` makes its first
choice of thread count during the warm-up (extra untimed steps); the baseline runs at torch's default count
(``--baseline-threads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import functools
import math
import multiprocessing
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from essl.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from essl.models.resnet import Conv3x3
from essl.training.config import PretrainConfig, load_config
from essl.training.model import ESSLModel
from essl.training.pretrain import Pretrainer


# ------------------------------------------------------------------------------------- baseline: PIL per image
def _random_resized_crop(img: Image.Image, size: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = random.randint(0, w - cw), random.randint(0, h - ch)
            return img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    side = min(w, h)
    x, y = (w - side) // 2, (h - side) // 2
    return img.resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side))


def _shift_hue(img: Image.Image, factor: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    h = Image.fromarray((np.asarray(h, dtype=np.int16) + int(factor * 255)).astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _color_jitter(img: Image.Image, b=0.4, c=0.4, s=0.4, hue=0.1) -> Image.Image:
    ops = [
        lambda im: ImageEnhance.Brightness(im).enhance(random.uniform(1 - b, 1 + b)),
        lambda im: ImageEnhance.Contrast(im).enhance(random.uniform(1 - c, 1 + c)),
        lambda im: ImageEnhance.Color(im).enhance(random.uniform(1 - s, 1 + s)),
        lambda im: _shift_hue(im, random.uniform(-hue, hue)),
    ]
    random.shuffle(ops)
    for op in ops:
        img = op(img)
    return img


def pil_view(img: Image.Image, size: int) -> torch.Tensor:
    img = _random_resized_crop(img, size)
    if random.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if random.random() < 0.8:
        img = _color_jitter(img)
    if random.random() < 0.2:
        img = img.convert("L").convert("RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR10_STD).view(3, 1, 1)


class PilTripletDataset(torch.utils.data.Dataset):
    """Per-image augmentation in the worker: two 32-px views and one 16-px crop (the official E-SSL transform)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        return pil_view(img, 32), pil_view(img, 32), pil_view(img, 16)


# ------------------------------------------------------------------------------------------------ essl side
def write_npy_dataset(folder: Path, images: torch.Tensor) -> Path:
    """A ``dataset=npy`` folder (``train/images.npy``, uint8 N×C×H×W) holding ``images``."""
    (folder / "train").mkdir(parents=True, exist_ok=True)
    np.save(folder / "train" / "images.npy", images.numpy())
    return folder


def split_settings(text: str) -> list[str]:
    """``KEY=VALUE,KEY=VALUE`` split at the commas outside brackets and braces, so that a value may be a YAML
    flow list (``equivariance=[{group: rotation, samples: 1}]``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def essl_config(
    data_root: Path,
    batch: int,
    overrides: list[str],
    with_prediction: bool = True,
    preset: str = "cifar10-esimclr",
) -> PretrainConfig:
    """A preset (``cifar10-esimclr`` unless told) on the npy folder, without the kNN monitor and the online probe
    (no labels)."""
    settings = ["dataset=npy", f"data_root={data_root}", f"batch_size={batch}", "knn_every=0", "online_probe=false"]
    without = [] if with_prediction else ["equivariance=[]"]
    return load_config(preset, settings + without + list(overrides))


class EsslStep:
    """Runs :meth:`Pretrainer.train_step` on the Pretrainer's own batches, epoch after epoch."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path):
        torch.manual_seed(0)
        self.trainer = Pretrainer(cfg, run_dir, progress=False)
        self.trainer.net.train()
        # Without the tuner, the count this side runs at: the configured one, or torch's count when the side was
        # built (``num_threads=0`` keeps torch's count, which another side of the same process may have changed
        # since, so it is set again before every step).
        self.fixed_threads = cfg.num_threads or torch.get_num_threads()
        self.it, self.epoch, self.batches = 0, 0, iter(self.trainer.batches.epoch(0, 0))

    def next_batch(self) -> torch.Tensor:
        for _ in range(2):
            try:
                return next(self.batches)
            except StopIteration:
                self.epoch += 1
                self.batches = iter(self.trainer.batches.epoch(self.epoch, 0))
        raise RuntimeError("the batch source yields no batches")

    def __call__(self) -> None:
        if self.trainer.thread_tuner is None and torch.get_num_threads() != self.fixed_threads:
            torch.set_num_threads(self.fixed_threads)
        x = self.next_batch()
        self.trainer.train_step(x, self.it % len(self.trainer.lrs))
        self.it += 1

    @property
    def settled(self) -> bool:
        """Whether the thread tuner (``tune_threads=true``) has made its first choice (always, without one)."""
        tuner = self.trainer.thread_tuner
        return tuner is None or bool(tuner.history)

    def threads(self) -> str:
        """The thread count used and, with the tuner, its first probe's step times per count."""
        tuner = self.trainer.thread_tuner
        if tuner is None:
            return f"{self.fixed_threads} thread(s), fixed"
        probe = ", ".join(f"{n}: {t:.2f} s" for n, t in tuner.history[0].items())
        return f"{tuner.best} thread(s), chosen by timing steps ({probe})"

    @property
    def thread_count(self) -> int:
        """The count the side's steps run at now."""
        tuner = self.trainer.thread_tuner
        return self.fixed_threads if tuner is None else tuner.best


# --------------------------------------------------------------------------------------------------- timing
def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_time(fn, reps: int) -> float:
    """The shortest of ``reps`` timed calls of ``fn``, after one untimed call."""
    fn()
    return min(timed(fn) for _ in range(reps))


def matmul_peak(dtype: torch.dtype, threads: int, n: int = 4096, reps: int = 4) -> float:
    """FLOP/s of an n×n by n×n matrix product in ``dtype`` at ``threads`` torch threads, best of ``reps``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_time(functools.partial(torch.mm, a, b), reps)


CONV_PEAK_LAYERS = ((256, 128, 16), (256, 256, 8), (256, 512, 4))  # (images, channels, side): the step's layers 2-4


def conv_peak(dtype: torch.dtype, threads: int, layers=CONV_PEAK_LAYERS, reps: int = 4) -> float:
    """FLOP/s of the fastest forward pass among stride-1 3×3 convolutions of ``layers`` (channels → channels) in
    ``dtype``, channels_last, at ``threads`` torch threads, best of ``reps`` each: oneDNN's convolutions can run
    faster than its matrix products of the same dtype (they do on AMD Zen 4)."""
    torch.set_num_threads(threads)
    rates = []
    for n, c, size in layers:
        x = torch.randn(n, c, size, size).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            best = best_time(functools.partial(torch.nn.functional.conv2d, x, w, padding=1), reps)
        rates.append(2 * n * size * size * c * c * 9 / best)
    return max(rates)


def step_flops(step: EsslStep) -> int:
    """FLOPs of one essl step (convolutions and matrix products, forward and backward), every 3×3 layer counted as
    the convolution it computes (a 2×2 map's matrix product skips the padded taps, so it would count fewer)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    changed = plain_convolutions(step.trainer.model)
    try:
        with counter:
            step()
    finally:
        for m in changed:
            m.__class__ = Conv3x3
    return counter.get_total_flops()


def plain_convolutions(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Make ``module``'s 3×3 convolutions plain ``nn.Conv2d`` on every map (the official code's layers; essl's
    :class:`essl.models.resnet.Conv3x3` computes 2×2 CPU maps as one matrix product), in place; returns the
    layers changed."""
    changed = [m for m in module.modules() if isinstance(m, Conv3x3)]
    for m in changed:
        m.__class__ = torch.nn.Conv2d
    return changed


def peak_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the matmul peak a step in autocast ``dtype`` is set against (float32 without autocast)."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


class RemoteBaseline:
    """A baseline step run in a child process of its own (spawned: glibc's malloc as the official code has it,
    whatever :func:`essl.runtime.retain_freed_memory` set in this one), one step per call, so that it still runs
    in the same interleaved rounds as the essl sides."""

    def __init__(self, images_u8: torch.Tensor, batch: int, workers: int, threads: int):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_baseline_server, args=(child, images_u8, batch, workers, threads))
        self.process.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("the baseline process did not start")

    def __call__(self) -> None:
        self.conn.send("step")
        reply = self.conn.recv()
        if reply != "done":
            raise RuntimeError(f"the baseline process failed: {reply}")

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(timeout=60)


def _baseline_server(conn, images_u8: torch.Tensor, batch: int, workers: int, threads: int) -> None:
    try:
        step = baseline_step(images_u8, batch, workers, threads)
        conn.send("ready")
        while conn.recv() == "step":
            step()
            conn.send("done")
    except Exception as exc:  # reported to the parent, which stops with it
        conn.send(f"{type(exc).__name__}: {exc}")


def baseline_step(images_u8: torch.Tensor, batch: int, workers: int, threads: int):
    """The official-style step: per-image PIL views from DataLoader workers, fp32, NCHW, at ``threads`` torch threads
    (the official code keeps torch's default)."""
    torch.manual_seed(0)
    model = ESSLModel(load_config("cifar10-esimclr"), in_channels=3).train()
    plain_convolutions(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.12, momentum=0.9, weight_decay=5e-4)
    hwc = images_u8.permute(0, 2, 3, 1).contiguous().numpy()
    loader = torch.utils.data.DataLoader(
        PilTripletDataset(hwc),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
    )

    def batches():
        while True:
            yield from loader

    source = batches()

    def step() -> None:
        torch.set_num_threads(threads)  # the essl sides' thread tuner may have set another count
        x1, x2, xs = next(source)
        xr = torch.cat([torch.rot90(xs, k, dims=(2, 3)) for k in range(4)])
        g = torch.arange(4).repeat_interleave(xs.shape[0])
        loss = model(x1, x2, [(xr, g)])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def thread_sweep(cfg: PretrainConfig, tmp: Path, counts: list[int], warmup: int, steps: int, batch: int) -> None:
    """The essl E-SimCLR step with ``torch.set_num_threads(n)`` for each ``n``, in interleaved rounds (a machine
    whose cores other processes also use shows what a thread count costs when a core is taken away)."""
    runs = {n: EsslStep(dataclasses.replace(cfg, num_threads=n), tmp / f"run-threads{n}") for n in counts}
    times: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(warmup + steps):
        for n, step in runs.items():
            t = timed(step)  # the side sets its own count
            if r >= warmup:
                times[n].append(t)
    flops = step_flops(next(iter(runs.values())))
    for n, ts in times.items():
        med = statistics.median(ts)
        peak = matmul_peak(peak_dtype(runs[n].trainer.dtype), n)
        print(
            f"essl E-SimCLR, {n} thread(s): {batch / med:7.1f} img/s   step {med:.2f} s "
            f"({', '.join(f'{t:.2f}' for t in ts)}); {100 * flops / med / peak:.0f}% of the 4096² matmul peak at "
            f"{n} thread(s) ({peak / 1e12:.2f} TFLOP/s)"
        )


def op_times(step: EsslStep, rows: int = 12) -> None:
    """Wall time and minor page faults of each aten operator over one essl step, timed call by call at the
    dispatcher (``TorchDispatchMode``). Unlike torch.profiler, which allocates as it records and moved the step's
    page faults around in our runs, this adds nothing to the heap between the operators."""
    import collections
    import resource

    from torch.utils._python_dispatch import TorchDispatchMode

    seconds: dict[str, float] = collections.defaultdict(float)
    faults: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    class Timer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            seconds[name] += time.perf_counter() - t0
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            calls[name] += 1
            return out

    with Timer():
        wall = timed(step)
    total = sum(seconds.values())
    print(f"\n## aten operators of one essl step ({wall:.2f} s with the timer, {total:.2f} s inside operators)\n")
    print("| operator | share | time | calls | minor page faults |\n|---|---|---|---|---|")
    for name, sec in sorted(seconds.items(), key=lambda kv: -kv[1])[:rows]:
        print(f"| `aten::{name}` | {100 * sec / total:.1f} % | {1e3 * sec:.0f} ms | {calls[name]} | {faults[name]:,} |")


def profile(step: EsslStep, steps: int, rows: int = 25) -> None:
    """torch.profiler over ``steps`` essl steps: by operator, then by operator and input shapes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    averages = prof.key_averages()
    print(f"\n## profile of {steps} essl steps, by operator (self CPU time)\n")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))
    print("\n## by operator and input shapes (self CPU time)\n")
    print(
        prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40, max_shapes_column_width=70
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per side (interleaved rounds)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="untimed rounds first (the baseline's step time falls for about ten steps: its loader and malloc settle)",
    )
    parser.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="preset overrides (essl side)")
    parser.add_argument("--no-baseline", action="store_true", help="time essl only")
    parser.add_argument(
        "--baseline-threads",
        default="0",
        metavar="N,M,...",
        help="torch threads of the baseline (0: torch's default); more counts add baselines in the same rounds",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE,...",
        help="also time the essl E-SimCLR step with these preset overrides, in the same rounds (repeatable); "
        "a value may be a YAML flow list, e.g. 'sampled:equivariance=[{group: rotation, weight: 0.4, "
        "view: cifar_small, head: cifar_simclr, samples: 1}]'",
    )
    parser.add_argument(
        "--before-2x2",
        action="store_true",
        help="also time the essl E-SimCLR step with its 2×2-map layers as plain convolutions, in the same rounds",
    )
    parser.add_argument(
        "--op-times", action="store_true", help="time each aten operator of one essl step at the end (and its faults)"
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N essl steps at the end")
    parser.add_argument(
        "--threads",
        default="",
        metavar="N,M,...",
        help="also time the essl E-SimCLR step with each of these torch thread counts, interleaved (e.g. 1,2)",
    )
    args = parser.parse_args()
    random.seed(0)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4 * args.batch, 3, 32, 32), dtype=torch.uint8)
    with tempfile.TemporaryDirectory(prefix="essl-bench-") as tmp, contextlib.ExitStack() as stack:
        root = write_npy_dataset(Path(tmp) / "data", images)
        e_cfg = essl_config(root, args.batch, args.set)
        s_cfg = essl_config(root, args.batch, args.set, with_prediction=False)
        default_threads = torch.get_num_threads()
        sides = {
            "essl E-SimCLR": EsslStep(e_cfg, Path(tmp) / "run-e"),
            "essl SimCLR": EsslStep(s_cfg, Path(tmp) / "run-s"),
        }
        for spec in args.variant:
            label, _, settings = spec.partition(":")
            v_cfg = essl_config(root, args.batch, args.set + split_settings(settings))
            sides[label] = EsslStep(v_cfg, Path(tmp) / f"run-{len(sides)}")
        if args.before_2x2:
            sides["essl E-SimCLR, 2x2 as conv"] = EsslStep(e_cfg, Path(tmp) / "run-conv")
            plain_convolutions(sides["essl E-SimCLR, 2x2 as conv"].trainer.model)
        baselines: dict[str, int] = {}  # name: torch threads
        if not args.no_baseline:
            for i, n in enumerate(int(c) or default_threads for c in args.baseline_threads.split(",")):
                baselines["baseline" if i == 0 else f"baseline, {n} thr"] = n
            remote = {name: RemoteBaseline(images, args.batch, args.workers, n) for name, n in baselines.items()}
            for side in remote.values():
                stack.callback(side.close)
            sides = remote | sides
        trainer = sides["essl E-SimCLR"].trainer
        dtype = trainer.dtype
        print(
            f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}"
        )
        print(
            f"E-SimCLR CIFAR-10 step, batch {args.batch} (+{4 * args.batch} rotated 16-px crops); essl: "
            f"{str(dtype).replace('torch.', '')}, {'channels_last' if trainer.channels_last else 'NCHW'}"
            f"{', compiled' if e_cfg.compile else ''}; {args.warmup} warm-up + {args.steps} timed steps per side, "
            f"interleaved"
        )
        times: dict[str, list[float]] = {name: [] for name in sides}
        essl_sides = {name: step for name, step in sides.items() if isinstance(step, EsslStep)}
        for r in range(args.warmup + args.steps):
            if r == args.warmup:  # the thread tuners' first probes belong to the warm-up
                for step in essl_sides.values():
                    while not step.settled:
                        step()
            for name, step in sides.items():
                t = timed(step)
                if r >= args.warmup:
                    times[name].append(t)
        for name, step in essl_sides.items():
            print(f"{name}: {step.threads()}")
        for name, n in baselines.items():
            print(f"{name}: {n} thread(s), fixed")
        flops = step_flops(sides["essl E-SimCLR"])
        flops_s = step_flops(sides["essl SimCLR"])
        peak_threads = sides["essl E-SimCLR"].thread_count
        fast_dtype = peak_dtype(dtype)
        fast_name = str(fast_dtype).replace("torch.", "")
        peak = matmul_peak(fast_dtype, peak_threads)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, ts in times.items():
            print(
                f"{name:14s} {args.batch / med[name]:7.1f} img/s   step {med[name]:.2f} s "
                f"(steps {', '.join(f'{t:.2f}' for t in ts)})"
            )
        for name in baselines:
            print(f"speed-up essl E-SimCLR / {name}: {med[name] / med['essl E-SimCLR']:.2f}x")
        if args.before_2x2:
            print(
                f"speed-up essl E-SimCLR / essl E-SimCLR, 2x2 as conv: {med['essl E-SimCLR, 2x2 as conv'] / med['essl E-SimCLR']:.2f}x"
            )
        for spec in args.variant:
            label = spec.partition(":")[0]
            print(
                f"speed-up {label} / essl E-SimCLR: {med['essl E-SimCLR'] / med[label]:.2f}x "
                f"({step_flops(sides[label]) / 1e12:.2f} TFLOP per step)"
            )
            for name in baselines:
                print(f"speed-up {label} / {name}: {med[name] / med[label]:.2f}x")
        e, s = med["essl E-SimCLR"], med["essl SimCLR"]
        print(
            f"prediction branch: {100 * (1 - s / e):.0f}% of the E-SimCLR step's time, "
            f"{100 * (1 - flops_s / flops):.0f}% of its FLOPs"
        )
        print(
            f"FLOPs per essl step: {flops / 1e12:.2f} TFLOP; achieved {flops / e / 1e12:.2f} TFLOP/s = "
            f"{100 * flops / e / peak:.0f}% of the {fast_name} 4096² matmul peak "
            f"at {peak_threads} thread(s) measured now ({peak / 1e12:.2f} TFLOP/s)"
        )
        if baselines:
            # What the paper's arithmetic allows on this machine: the step's FLOPs at the fastest kernel rate seen.
            base = med["baseline"]
            n32 = baselines["baseline"]
            mm32, conv32 = matmul_peak(torch.float32, n32), conv_peak(torch.float32, n32)
            print(
                f"baseline: {flops / base / 1e12:.2f} TFLOP/s = {100 * flops / base / mm32:.0f}% of the float32 "
                f"4096² matmul peak ({mm32 / 1e12:.2f} TFLOP/s) and {100 * flops / base / conv32:.0f}% of the fastest "
                f"float32 3×3 convolution of layers 2-4 ({conv32 / 1e12:.2f}) at {n32} thread(s)"
            )
            conv = conv_peak(fast_dtype, peak_threads)
            best = max(peak, conv)
            print(
                f"ceiling: the fastest {fast_name} 3×3 convolution forward of "
                f"layers 2-4 runs at {conv / 1e12:.2f} TFLOP/s; at the faster of it and the matmul these FLOPs take "
                f"{flops / best:.2f} s, {base * best / flops:.2f}x the baseline on this machine (essl E-SimCLR runs at "
                f"{100 * flops / e / best:.0f}% of that rate)"
            )
        if args.threads:
            thread_sweep(
                e_cfg, Path(tmp), [int(n) for n in args.threads.split(",")], args.warmup, args.steps, args.batch
            )
        if args.op_times:
            op_times(sides["essl E-SimCLR"])
        if args.profile:
            profile(sides["essl E-SimCLR"], args.profile)


if __name__ == "__main__":
    main()
