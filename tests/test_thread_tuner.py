"""essl.runtime.ThreadTuner: which thread count it picks from given step times, and when it times them again
(its decisions only; no step is timed here)."""

from __future__ import annotations

import numpy as np
import torch

from essl.runtime import ThreadTuner
from essl.training import pretrain
from essl.training.config import load_config


def feed(tuner: ThreadTuner, seconds: dict[int, float], steps: int) -> list[int]:
    """Run ``steps`` fake steps taking ``seconds[n]`` at n threads; the thread counts used, in order."""
    used = []
    for _ in range(steps):
        n = tuner.current()
        used.append(n)
        tuner.record(n, seconds[n])
    return used


def test_candidates_and_first_probe():
    assert ThreadTuner(2).candidates == [1, 2]
    assert ThreadTuner(16).candidates == [1, 8, 16]
    tuner = ThreadTuner(2, recheck=3)
    # the first (untimed) step at torch's count, then 1, 2, 1, 2 interleaved when they are close
    assert feed(tuner, {1: 1.0, 2: 0.9}, 5) == [2, 1, 2, 1, 2]
    assert tuner.best == 2 and tuner.history == [{1: 1.0, 2: 0.9}]


def test_picks_one_thread_on_a_busy_machine_and_rechecks_less_often():
    tuner = ThreadTuner(2, recheck=2, max_recheck=8)
    busy = {1: 1.0, 2: 6.0}
    used = feed(tuner, busy, 3)  # warm-up, then one round: 2 threads are 6× slower, no second round
    assert used == [2, 1, 2] and tuner.best == 1 and tuner.countdown == 2
    assert feed(tuner, busy, 2) == [1, 1]  # the interval, then a new probe
    assert feed(tuner, busy, 2) == [1, 2]
    assert tuner.best == 1 and tuner.interval == 4  # the same choice: the interval doubles
    feed(tuner, busy, 4 + 2 + 8 + 2 + 8 + 2)
    assert tuner.interval == 8  # … up to max_recheck


def test_follows_a_change_of_load():
    tuner = ThreadTuner(2, recheck=2)
    feed(tuner, {1: 1.0, 2: 6.0}, 3)
    assert tuner.best == 1
    idle = {1: 1.0, 2: 0.55}
    feed(tuner, idle, 2 + 4)  # the interval, then a full probe (the counts are within 1.5×)
    assert tuner.best == 2 and tuner.interval == 2


def test_step_sets_the_thread_count():
    before = torch.get_num_threads()
    tuner = ThreadTuner(2)
    tuner.warmup, tuner.queue = 0, [1]
    try:
        with tuner.step():
            assert torch.get_num_threads() == 1
        assert tuner.times[1] and not tuner.queue
    finally:
        torch.set_num_threads(before)


def test_pretrainer_tunes_only_with_num_threads_0(tmp_path, monkeypatch):
    (tmp_path / "data" / "train").mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    np.save(tmp_path / "data" / "train" / "images.npy", images)
    settings = ["dataset=npy", f"data_root={tmp_path / 'data'}", "batch_size=8", "knn_every=0", "online_probe=false"]
    monkeypatch.setattr(pretrain, "DEFAULT_THREADS", 2)  # as on a 2-core machine (the tests run at 1 thread)
    try:
        fixed = pretrain.Pretrainer(load_config("cifar10-esimclr", settings + ["num_threads=1"]), tmp_path / "a")
        assert fixed.thread_tuner is None and torch.get_num_threads() == 1
        tuned = pretrain.Pretrainer(load_config("cifar10-esimclr", settings + ["num_threads=0"]), tmp_path / "b")
        assert tuned.thread_tuner is not None and tuned.thread_tuner.candidates == [1, 2]
        x = next(iter(tuned.batches.epoch(0, 0)))
        tuned.train_step(x, 0)  # the untimed first step, at torch's count
        assert tuned.thread_tuner.warmup == 0 and torch.get_num_threads() == 2
        tuned.train_step(x, 1)  # the first probe step, at 1 thread
        assert tuned.thread_tuner.times[1] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)
