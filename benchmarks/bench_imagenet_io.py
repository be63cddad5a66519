"""Throughput of the streamed ImageNet pipeline's workers, against a torchvision-style PIL pipeline.

Writes synthetic JPEGs of ImageNet's typical size (500×375, quality 90; smooth colour fields plus noise, so that
they compress like photographs rather than like flat colour) into a temporary folder, then times, in this one
process (the work of one DataLoader worker):

- **essl**: :class:`essl.data.imagenet.DecodedFiles` at working size 256: decode (JPEG draft where it helps),
  shorter side to 256 with the aspect kept, padded into the 341×341 box with the valid size. The random crops run
  later on the training device.
- **PIL RRC ×1**: what a torchvision ``RandomResizedCrop(224, bicubic) + RandomHorizontalFlip`` worker does per
  image (decode, crop box drawn as torchvision draws it, one bicubic resize of the box to 224, flip, uint8 array).
  Written with PIL and NumPy only (torchvision is not installed here).
- **PIL RRC ×3**: the official E-SimCLR worker's crops per image: two 224-px views and one 96-px rotation crop
  (rdangovs/essl ``imagenet/simclr/main.py`` ``Transform``), without its colour jitter, blur and solarisation,
  which essl also runs on the device.

It also prints the host→device bytes per image: the uint8 box for essl; for the official pipeline the float32
tensors that ``ToTensor()`` + ``Normalize`` hand to the GPU (2·3·224² + 3·96² floats).

Usage: ``python benchmarks/bench_imagenet_io.py [--images 200] [--repeats 3]``. Timings on a shared machine move
with the neighbours: compare the rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from essl.data.imagenet import DecodedFiles, box_size


def make_jpegs(folder: Path, n: int, size=(500, 375), seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    files = []
    for i in range(n):
        fx, fy, ph = rng.uniform(0.005, 0.03, 3), rng.uniform(0.005, 0.03, 3), rng.uniform(0, 6.3, 3)
        base = np.stack([127 + 100 * np.sin(fx[c] * xx + fy[c] * yy + ph[c]) for c in range(3)], -1)
        img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.JPEG"
        Image.fromarray(img).save(path, quality=90)
        files.append(path)
    return files


def rrc_params(width: int, height: int, rnd: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision ``RandomResizedCrop.get_params``: (left, top, w, h)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rnd.uniform(*scale)
        aspect = math.exp(rnd.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rnd.randint(0, width - w), rnd.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def pil_rrc(path: Path, sizes: tuple[int, ...], rnd: random.Random) -> list[np.ndarray]:
    with Image.open(path) as im:
        im = im.convert("RGB")
        out = []
        for size in sizes:
            left, top, w, h = rrc_params(*im.size, rnd)
            crop = im.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
            if rnd.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            out.append(np.asarray(crop, dtype=np.uint8))
        return out


def timed(pipelines: dict, files, repeats: int) -> dict[str, float]:
    """Median images/s of each pipeline over ``repeats`` passes over ``files``; the pipelines take turns within
    every pass, so that a change of load on a shared machine hits them alike."""
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(repeats):
        for name, fn in pipelines.items():
            t0 = time.perf_counter()
            for f in files:
                fn(f)
            rates[name].append(len(files) / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="essl working size (shorter side)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = make_jpegs(Path(tmp), args.images)
        mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        data = DecodedFiles(files, args.size)
        rnd = random.Random(0)
        index = {f: i for i, f in enumerate(files)}
        for f in files[:5]:  # warm the page cache and the decoders
            data[index[f]], pil_rrc(f, (224,), rnd)
        rows = list(
            timed(
                {
                    f"essl worker: decode + resize (shorter side {args.size}) + pad": lambda f: data[index[f]],
                    "PIL RandomResizedCrop(224) + flip (1 view)": lambda f: pil_rrc(f, (224,), rnd),
                    "PIL official E-SimCLR crops (2×224 + 96)": lambda f: pil_rrc(f, (224, 224, 96), rnd),
                },
                files,
                args.repeats,
            ).items()
        )
    side = box_size(args.size)
    essl_bytes = 3 * side * side + 2 * 8
    official_bytes = 4 * (2 * 3 * 224 * 224 + 3 * 96 * 96)
    print(
        f"{args.images} synthetic 500x375 JPEGs (quality 90, {mean_kb:.0f} kB each), {args.repeats} passes, "
        f"median, one process"
    )
    print(f"{'pipeline':58s} {'images/s per worker':>20s}")
    for name, rate in rows:
        print(f"{name:58s} {rate:20.0f}")
    print(
        f"ratio essl / PIL 1 view: {rows[0][1] / rows[1][1]:.2f}; essl / official 3 crops: "
        f"{rows[0][1] / rows[2][1]:.2f}"
    )
    print(
        f"host->device bytes per image: essl {essl_bytes:,} (uint8 {side}x{side} box + valid size); "
        f"official float32 views {official_bytes:,} ({official_bytes / essl_bytes:.1f}x); "
        f"one uint8 224 view {3 * 224 * 224:,}"
    )


if __name__ == "__main__":
    main()
