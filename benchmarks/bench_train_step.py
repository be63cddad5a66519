"""Throughput of one E-SimCLR training step of the CIFAR-10 preset, essl versus an official-style baseline.

Both sides run the same model (CIFAR ResNet-18, projector 512-2048-2048, rotation head 512-2048-2048-4), the
same batch (256 images: two 32-px views plus the four rotations of a 16-px crop, i.e. 512 + 1024 images through
the backbone), the same loss (cross-view InfoNCE τ=0.5 + 0.4·CE) and the same SGD step; both start from uint8
CIFAR-sized images in memory and end after ``optimizer.step()``.

- **essl**: the batch is sliced from a uint8 tensor; augmentation runs batched and per-sample random with kornia
  on the training device; bf16 autocast and channels_last where the CPU supports them (essl's defaults).
- **baseline**: built the way the official code (rdangovs/essl cifar10/main.py) does it: per-image PIL
  augmentation (RandomResizedCrop, flip, ColorJitter, grayscale, ToTensor, Normalize; written here with Pillow
  because torchvision is not a dependency) in DataLoader workers, fp32, NCHW, rotations by ``torch.rot90``.

Images are random uint8 (no dataset is needed: the work per image is the same). Run:

    python benchmarks/bench_train_step.py [--steps 6] [--warmup 2] [--batch 256] [--workers 2]

It prints images/s (median over timed steps) for each side and the ratio.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance

from essl.augmentation import Normalize, build_view, get_recipe
from essl.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from essl.runtime import autocast_context, resolve_precision
from essl.training.config import load_config
from essl.training.model import ESSLModel


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


# --------------------------------------------------------------------------------------------------- timing
def time_steps(step, batches, warmup: int, steps: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step(next(batches))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def make_model(seed: int) -> ESSLModel:
    torch.manual_seed(seed)
    return ESSLModel(load_config("cifar10-esimclr"), in_channels=3)


def bench_essl(images_u8: torch.Tensor, batch: int, warmup: int, steps: int, precision: str, channels_last: bool):
    device = torch.device("cpu")
    dtype = resolve_precision(precision, device)
    model = make_model(0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.12, momentum=0.9, weight_decay=5e-4)
    view, small = build_view(get_recipe("cifar"), 3), build_view(get_recipe("cifar_small"), 3)
    norm = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def batches():
        while True:
            idx = torch.randint(len(images_u8), (batch,))
            yield images_u8[idx]

    def step(x):
        with torch.no_grad():
            x1, x2 = norm(view(x)).contiguous(memory_format=fmt), norm(view(x)).contiguous(memory_format=fmt)
            xs = norm(small(x))
            xr = torch.cat([torch.rot90(xs, k, dims=(2, 3)) for k in range(4)]).contiguous(memory_format=fmt)
            g = torch.arange(4).repeat_interleave(batch)
        with autocast_context(device, dtype):
            loss = model(x1, x2, [(xr, g)])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return time_steps(step, batches(), warmup, steps), dtype


def bench_baseline(images_u8: torch.Tensor, batch: int, warmup: int, steps: int, workers: int):
    model = make_model(0)
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

    def step(b):
        x1, x2, xs = b
        xr = torch.cat([torch.rot90(xs, k, dims=(2, 3)) for k in range(4)])
        g = torch.arange(4).repeat_interleave(xs.shape[0])
        loss = model(x1, x2, [(xr, g)])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return time_steps(step, batches(), warmup, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    parser.add_argument("--precision", default="auto", help="essl side: auto | bf16 | fp32")
    parser.add_argument("--no-channels-last", action="store_true")
    args = parser.parse_args()
    random.seed(0)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4 * args.batch, 3, 32, 32), dtype=torch.uint8)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"E-SimCLR CIFAR-10 step, batch {args.batch} (+{4 * args.batch} rotated 16-px crops), "
        f"{args.warmup} warm-up + {args.steps} timed steps per side"
    )
    base = bench_baseline(images, args.batch, args.warmup, args.steps, args.workers)
    ours, dtype = bench_essl(images, args.batch, args.warmup, args.steps, args.precision, not args.no_channels_last)
    b_ips, e_ips = args.batch / statistics.median(base), args.batch / statistics.median(ours)
    print(
        f"baseline (PIL per image, {args.workers} workers, fp32, NCHW): {b_ips:6.1f} img/s  "
        f"(step {statistics.median(base):.2f} s; steps {', '.join(f'{t:.2f}' for t in base)})"
    )
    print(
        f"essl (kornia batched, {str(dtype).replace('torch.', '')}, "
        f"{'NCHW' if args.no_channels_last else 'channels_last'}): {e_ips:6.1f} img/s  "
        f"(step {statistics.median(ours):.2f} s; steps {', '.join(f'{t:.2f}' for t in ours)})"
    )
    print(f"speed-up: {e_ips / b_ips:.2f}x")


if __name__ == "__main__":
    main()
