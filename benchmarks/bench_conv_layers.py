"""Forward and backward rate of single 3×3 convolutions at the shapes of the CIFAR ResNet-18 in E-SimCLR.

Each row times one ``Conv2d(C, C, 3, padding=1)`` on an ``N×C×H×H`` input (forward under bf16 autocast or fp32,
then the backward of a sum), in NCHW and channels_last, and prints GFLOP/s (2·N·C²·9·H² per forward, twice that
per backward) and the backward/forward time ratio (about 2 when both run at the same efficiency). The shapes are
the layers of the two 32-px views and of the 16-px rotation crops; at 2×2 a last row times essl's ``Conv3x3``, which
computes that layer as one matrix product (its GFLOP/s count the convolution's FLOPs, padded taps included). Run:

    python benchmarks/bench_conv_layers.py [--threads 1] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from essl.models.resnet import Conv3x3

# (N, C, H): batch 64 of the 32-px views at layers 1, 2, 4; 256 rotated 16-px crops at layer 4
SHAPES = [(64, 64, 32), (64, 128, 16), (64, 512, 4), (256, 512, 2)]


def time_layer(
    n: int, c: int, h: int, bf16: bool, channels_last: bool, reps: int, product: bool = False
) -> tuple[float, float]:
    """Median forward and backward seconds of one 3×3 convolution layer (``product``: essl's ``Conv3x3``, which
    computes a 2×2 map as one matrix product)."""
    conv = Conv3x3(c, c) if product else torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
    x = torch.randn(n, c, h, h)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    forward, backward = [], []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        t1 = time.perf_counter()
        y.float().sum().backward()
        t2 = time.perf_counter()
        if r:  # the first call builds oneDNN's primitives
            forward.append(t1 - t0)
            backward.append(t2 - t1)
    return statistics.median(forward), statistics.median(backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print("| N, C, H | precision, layout | forward GFLOP/s | backward GFLOP/s | backward / forward time |")
    print("|---|---|---|---|---|")
    for n, c, h in SHAPES:
        flops = 2 * n * c * c * 9 * h * h
        for bf16 in (False, True):
            for channels_last in (False, True):
                f, b = time_layer(n, c, h, bf16, channels_last, args.reps)
                kind = f"{'bf16' if bf16 else 'fp32'}, {'channels_last' if channels_last else 'NCHW'}"
                print(
                    f"| {n}, {c}, {h} | {kind} | {flops / f / 1e9:.0f} | {2 * flops / b / 1e9:.0f} | {b / f:.1f} |",
                    flush=True,
                )
        if h == 2:  # what essl runs there: the same layer as one (N, 4·C) × (4·C, 4·C) product, FLOPs as a conv
            f, b = time_layer(n, c, h, True, True, args.reps, product=True)
            kind = "bf16, channels_last, as one product (essl)"
            print(f"| {n}, {c}, {h} | {kind} | {flops / f / 1e9:.0f} | {2 * flops / b / 1e9:.0f} | {b / f:.1f} |")


if __name__ == "__main__":
    main()
