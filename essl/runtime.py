"""Where and how tensors are computed: device, autocast precision, memory format and CPU threads, resolved from
settings.

Used alike by pretraining (:mod:`essl.training.pretrain`), evaluation (:mod:`essl.evaluation.evaluate`) and the
photonics fine-tuning (:mod:`essl.evaluation.photonics`), so that ``auto`` means the same everywhere.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

import torch
from torch import nn

from essl.catalog import PRECISIONS
from essl.errors import EsslError

ModuleT = TypeVar("ModuleT", bound=nn.Module)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

#: torch's CPU thread count when essl was imported, before a ThreadTuner or ``num_threads`` changed it: what a
#: tuned run (``tune_threads``) starts from in every run of a process (the demo trains several in one).
DEFAULT_THREADS = torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without CUDA is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise EsslError("device=cuda was asked for but CUDA is not available; use device=cpu or device=auto.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16/AMX), fp16 on older
    CUDA GPUs, fp32 otherwise."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise EsslError("precision=fp16 needs a CUDA device; on a CPU use bf16 or fp32.")
    return DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` of an autocast dtype."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def resolve_runtime(device: str, precision: str) -> tuple[torch.device, torch.dtype, str]:
    """``(device, autocast dtype, precision name)`` of a device and a precision setting."""
    if precision not in PRECISIONS:
        raise EsslError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    return dev, dtype, precision_name(dtype)


def resolve_channels_last(value: str) -> bool:
    """auto: on (channels_last helps convolutions with oneDNN on CPUs and with cuDNN on GPUs)."""
    return str(value).lower() in ("true", "auto")


def to_channels_last(module: ModuleT) -> ModuleT:
    """``module.to(memory_format=torch.channels_last)``: its 4-D parameters and buffers in NHWC order (the
    ``channels_last`` setting). torch's type stubs do not list ``memory_format`` for ``Module.to``, which takes it."""
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op for fp32."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`retain_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: (1 << 31) - 1, _M_TOP_PAD: 64 << 20}
_malloc_state: dict[str, bool] = {}


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel; return whether
    the settings are in force in this process.

    By default glibc serves blocks above a threshold (at most 32 MiB) with ``mmap`` and unmaps them on ``free``, and
    trims the heap's free top, so a training step's large tensors (a batch of 256 CIFAR images' 64-channel
    activations is 33.5 MB in bf16) come back as fresh pages every step, each first touched through a page fault.
    On the 2-core CI machine kind that was 0.4-3 s of system time per E-SimCLR step (BENCHMARKS.md). With blocks
    up to 1 GiB taken from the heap and up to 2 GiB of free heap kept (``mallopt``), the faults stop after the
    first steps; the process keeps its peak memory until it exits. Applied once per process on the CPU by
    :class:`essl.training.pretrain.Pretrainer`; a no-op off glibc, under a preloaded allocator (jemalloc,
    tcmalloc), or with ``ESSL_MALLOC=default`` in the environment.
    """
    if malloc_setting() == "default":
        return _malloc_state.get("applied", False)  # mallopt cannot be undone in a process that applied it
    if "applied" not in _malloc_state:
        _malloc_state["applied"] = _set_malloc()
    return _malloc_state["applied"]


def malloc_setting() -> str:
    """The ``ESSL_MALLOC`` environment variable: ``retain`` (also when unset: :func:`retain_freed_memory` on the CPU)
    or ``default`` (glibc's malloc as it is); any other value is an error."""
    raw = os.environ.get("ESSL_MALLOC", "")
    value = raw.strip().lower() or "retain"
    if value not in ("retain", "default"):
        raise EsslError(
            f"ESSL_MALLOC must be 'retain' (keep freed memory for reuse, essl's default on the CPU) or 'default' "
            f"(glibc's malloc as it is), got {raw!r}. Unset it or give one of these."
        )
    return value


def _set_malloc() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.items())


class ThreadTuner:
    """Chooses torch's CPU thread count by timing training steps (``tune_threads: true``, ``num_threads=0``, CPU).

    On a machine whose cores other processes also use, torch's threads wait for each other at every operator and a
    step can run several times slower with all cores than with one (BENCHMARKS.md), while on an idle machine all
    cores are faster. The tuner runs two steps at each candidate count (1, half and all of torch's default; the
    current choice last), times the second of each (the first step after a change of count was measured up to
    several times slower than the next ones, and the run's first step also builds oneDNN's kernels), keeps the
    fastest, and times them again after ``recheck`` steps, an interval that doubles, up to ``max_recheck``, each time
    the choice holds and falls back to ``recheck`` when it changes. The thread count changes neither the data nor
    the arithmetic, only the order of some sums, which is why the tuner is opt-in: a tuned run does not repeat bit
    for bit."""

    def __init__(self, threads: int, recheck: int = 50, max_recheck: int = 1600):
        self.candidates = sorted({1, max(1, threads // 2), threads})
        self.best, self.recheck, self.max_recheck = threads, recheck, max_recheck
        self.interval, self.countdown = recheck, 0
        self.queue: list[tuple[int, bool]] = []  # (threads, timed) of the probe's next steps
        self.times: dict[int, float] = {}
        self.history: list[dict[int, float]] = []  # each probe's step time per candidate, for reports
        self.start_probe()

    def start_probe(self) -> None:
        order = [c for c in self.candidates if c != self.best] + [self.best]
        self.queue, self.times = [(c, timed) for c in order for timed in (False, True)], {}

    def current(self) -> int:
        """The thread count for the next step."""
        return self.queue[0][0] if self.queue else self.best

    @contextmanager
    def step(self) -> Iterator[None]:
        """Around one training step: sets the thread count, then records the step's wall time."""
        n = self.current()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        t0 = time.perf_counter()
        yield
        self.record(n, time.perf_counter() - t0)

    def record(self, n: int, seconds: float) -> None:
        """One step at ``n`` threads took ``seconds``."""
        if not self.queue:
            self.countdown -= 1
            if self.countdown <= 0:
                self.start_probe()
            return
        _, timed = self.queue.pop(0)
        if timed:
            self.times[n] = seconds
        if not self.queue:
            self.history.append(dict(self.times))
            choice = min(self.times, key=self.times.__getitem__)
            held = choice == self.best and len(self.history) > 1
            self.interval = min(2 * self.interval, self.max_recheck) if held else self.recheck
            self.best, self.countdown = choice, self.interval
