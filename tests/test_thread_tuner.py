"""essl.runtime.ThreadTuner: which thread count it picks from given step times, and when it times them again
(its decisions only; no step is timed here), and the Pretrainer's use of it."""

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
    # two steps per count, the current choice (torch's count) last; the second of each is timed
    assert feed(tuner, {1: 1.0, 2: 0.9}, 4) == [1, 1, 2, 2]
    assert tuner.best == 2 and tuner.history == [{1: 1.0, 2: 0.9}]
    assert feed(tuner, {1: 1.0, 2: 0.9}, 3 + 4) == [2, 2, 2, 1, 1, 2, 2]  # the interval, then the next probe


def test_only_the_second_step_at_a_count_is_timed():
    tuner = ThreadTuner(2)
    for n, seconds in [(1, 9.0), (1, 1.0), (2, 9.0), (2, 2.0)]:  # the first step after a change is slow
        assert tuner.current() == n
        tuner.record(n, seconds)
    assert tuner.history == [{1: 1.0, 2: 2.0}] and tuner.best == 1


def test_picks_one_thread_on_a_busy_machine_and_rechecks_less_often():
    tuner = ThreadTuner(2, recheck=2, max_recheck=8)
    busy = {1: 1.0, 2: 6.0}
    assert feed(tuner, busy, 4) == [1, 1, 2, 2]
    assert tuner.best == 1 and tuner.countdown == 2 and tuner.interval == 2
    assert feed(tuner, busy, 2 + 4) == [1, 1, 2, 2, 1, 1]  # the interval, then a probe with 1 (the choice) last
    assert tuner.best == 1 and tuner.interval == 4  # the same choice: the interval doubles
    feed(tuner, busy, 4 + 4 + 8 + 4 + 8 + 4)
    assert tuner.interval == 8  # … up to max_recheck


def test_follows_a_change_of_load():
    tuner = ThreadTuner(2, recheck=2)
    feed(tuner, {1: 1.0, 2: 6.0}, 4)
    assert tuner.best == 1
    feed(tuner, {1: 1.0, 2: 0.55}, 2 + 4)  # the load has gone
    assert tuner.best == 2 and tuner.interval == 2


def test_step_sets_the_thread_count():
    before = torch.get_num_threads()
    tuner = ThreadTuner(2)
    try:
        with tuner.step():
            assert torch.get_num_threads() == 1
        with tuner.step():
            pass
        assert tuner.queue[0] == (2, False) and 1 in tuner.times
    finally:
        torch.set_num_threads(before)


def test_pretrainer_tunes_only_when_asked_with_num_threads_0(tmp_path, monkeypatch):
    (tmp_path / "data" / "train").mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    np.save(tmp_path / "data" / "train" / "images.npy", images)
    settings = ["dataset=npy", f"data_root={tmp_path / 'data'}", "batch_size=8", "knn_every=0", "online_probe=false"]
    monkeypatch.setattr(pretrain, "DEFAULT_THREADS", 2)  # as on a 2-core machine (the tests run at 1 thread)
    try:
        fixed = pretrain.Pretrainer(load_config("cifar10-esimclr", settings + ["num_threads=1"]), tmp_path / "a")
        assert fixed.thread_tuner is None and torch.get_num_threads() == 1
        default = pretrain.Pretrainer(load_config("cifar10-esimclr", settings), tmp_path / "c")
        assert default.thread_tuner is None and torch.get_num_threads() == 1  # the default leaves torch's count
        tuned = pretrain.Pretrainer(
            load_config("cifar10-esimclr", settings + ["num_threads=0", "tune_threads=true"]), tmp_path / "b"
        )
        assert tuned.thread_tuner is not None and tuned.thread_tuner.candidates == [1, 2]
        x = next(iter(tuned.batches.epoch(0, 0)))
        for it in range(2):  # two steps at 1 thread, the second timed
            tuned.train_step(x, it)
        assert torch.get_num_threads() == 1 and list(tuned.thread_tuner.times) == [1]
        tuned.train_step(x, 2)  # then torch's count
        assert torch.get_num_threads() == 2 and tuned.thread_tuner.queue == [(2, True)]
    finally:
        torch.set_num_threads(1)
