"""essl.runtime.retain_freed_memory: glibc keeps a training step's large blocks instead of page-faulting them in anew."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

# Allocate, fill and free a 64 MiB tensor (above glibc's largest automatic mmap threshold, 32 MiB) 12 times (the
# heap grows over the first few rounds), then 8 times more, and print the minor page faults of those 8 rounds.
_PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    from essl.runtime import retain_freed_memory
    applied = retain_freed_memory() if sys.argv[1] == "retain" else False
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(12):
        torch.empty(16 << 20).fill_(1.0)
    start = faults()
    for _ in range(8):
        torch.empty(16 << 20).fill_(1.0)
    print(applied, faults() - start)
    """
)


def _probe(mode: str, **env: str) -> tuple[str, int]:
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )
    assert res.returncode == 0, res.stderr
    applied, faults = res.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retained_blocks_are_not_page_faulted_in_again():
    applied, faults = _probe("retain")
    assert applied == "True"
    _, default_faults = _probe("default")
    # by default each round maps 16,384 fresh 4 KiB pages; retained, the block comes back from the heap
    assert default_faults > 8 * 8_000, default_faults
    assert faults < 2_000, faults


def test_essl_malloc_default_keeps_the_allocator_as_it_is():
    applied, _ = _probe("retain", ESSL_MALLOC="default")
    assert applied == "False"


def test_a_bad_essl_malloc_is_named_before_anything_is_written(tmp_path):
    cheap = ["epochs=1", "subset=64", "batch_size=32", "knn_every=0", "num_threads=1", "precision=fp32"]
    res = subprocess.run(
        [sys.executable, "-m", "essl", "pretrain", "mnist5k-simclr", *cheap, "--out", "r", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ESSL_MALLOC": "off"},
        timeout=300,
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    assert "ESSL_MALLOC" in res.stderr and "'off'" in res.stderr and "'retain'" in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()
