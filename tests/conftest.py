"""Shared test settings: one torch thread per test process (tests run in parallel under pytest-xdist)."""

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Run every test in its own folder so that default paths such as runs/ never touch the repository."""
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield
