"""benchmarks/gpu_check.py: its CPU dry run goes through the whole script; without CUDA it says so and exits 0."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_dry_run_prints_the_table():
    res = _run("--dry-run")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert "| configuration | images/s | peak memory (GiB) | s to first step | losses finite |" in lines
    row = next(line for line in lines if line.startswith("| cpu fp32 (dry run) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1].replace(",", "")) > 0 and float(cells[3]) > 0 and cells[4] == "yes"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_says_so_and_exits_0():
    res = _run()
    assert res.returncode == 0 and "no CUDA device" in res.stdout
