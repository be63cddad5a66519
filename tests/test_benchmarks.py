"""The benchmark scripts run on essl's real training step (a tiny batch, one step; no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str) -> str:
    res = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.mark.slow
def test_train_step_benchmark_runs_the_pretrainer_and_reports_flops():
    out = _run(
        "bench_train_step.py",
        *(
            "--batch",
            "8",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--workers",
            "0",
            "--threads",
            "1",
            "--before-2x2",
            "--op-times",
            "--variant",
            "sampled:equivariance=[{group: rotation, weight: 0.4, view: cifar_small, head: cifar_simclr, samples: 1}]",
        ),
    )
    for needle in (
        "baseline",
        "essl SimCLR",
        "speed-up",
        "prediction branch",
        "TFLOP",
        "matmul peak",
        "1 thread(s)",
        "essl E-SimCLR / essl E-SimCLR, 2x2 as conv",
        "| `aten::convolution_backward` |",
        "speed-up sampled / baseline",
        "of the float32 4096² matmul peak (",
        "ceiling: the ",
    ):
        assert needle in out, out
    # 8 images: 16 32-px views + 32 16-px crops through a CIFAR ResNet-18 (0.56 GMAC per 32-px image, a quarter per
    # 16-px crop), forward + backward ≈ 3 × 2 × 24 × 0.56 GFLOP ≈ 0.08 TFLOP
    tflop = float(out.split("FLOPs per essl step: ")[1].split(" TFLOP")[0])
    assert 0.01 < tflop < 1.0, out
    # one drawn rotation per crop instead of four: the 16-px branch does a quarter of its work
    sampled = float(out.split("speed-up sampled / essl E-SimCLR: ")[1].split("(")[1].split(" TFLOP")[0])
    assert sampled < tflop, out


@pytest.mark.slow
@pytest.mark.parametrize(("family", "passes"), [("cifar10", ("3.00", "2.25")), ("mnist5k", ("4.04", "2.51"))])
def test_cost_benchmark_runs_each_configuration(family, passes):
    out = _run(
        "bench_essl_cost.py",
        "--family",
        family,
        "--methods",
        "simclr",
        "--batch",
        "8",
        "--rounds",
        "1",
        "--warmup",
        "0",
    )
    assert "| simclr | base | 2.00 |" in out, out
    assert f"| simclr | E- (all 4 rotations) | {passes[0]} |" in out, out
    assert f"| simclr | E- sampled (1 rotation) | {passes[1]} |" in out, out


def test_conv_layer_benchmark_runs():
    out = _run("bench_conv_layers.py", "--reps", "1")
    assert out.count("| 256, 512, 2 |") == 5, out
    assert "| 256, 512, 2 | bf16, channels_last, as one product (essl) |" in out, out


@pytest.mark.slow
def test_malloc_benchmark_runs_both_settings_in_their_own_processes():
    out = _run("bench_malloc.py", "--batch", "8", "--steps", "1", "--rounds", "1", "--threads", "1")
    assert "retained (essl's default) (1 thread(s), retained=True)" in out, out
    assert "glibc default (ESSL_MALLOC=default) (1 thread(s), retained=False)" in out, out
    assert "speed-up, retained (essl's default) / glibc default" in out, out
