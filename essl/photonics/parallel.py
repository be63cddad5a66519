"""One BLAS thread per worker, and a small process pool (timings in BENCHMARKS.md).

Multi-threaded OpenBLAS is 3-10x *slower* on the small dense matrices of the solver, so every
labelling process runs with one BLAS thread: worker processes get ``OPENBLAS_NUM_THREADS=1``
(and the MKL/OMP equivalents) in their environment before numpy loads, and the current process
is limited at run time with ``threadpoolctl`` (part of ``essl[phc]``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from threadpoolctl import threadpool_limits

__all__ = ["BLAS_ENV", "blas_single_thread", "imap_workers"]

#: Environment that pins BLAS / OpenMP libraries to one thread.
BLAS_ENV: dict[str, str] = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Context manager: run the enclosed code with one BLAS thread (threadpoolctl), then restore the old count."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _init_worker() -> None:
    os.environ.update(BLAS_ENV)


def imap_workers(func: Callable[[Any], Any], items: Iterable[Any], workers: int = 1) -> Iterator[Any]:
    """``map(func, items)`` lazily and in order, in this process or in ``workers`` processes.

    Worker processes are started with the ``spawn`` method and :data:`BLAS_ENV`, so numpy's
    BLAS starts single-threaded in each; with ``workers == 1`` the work runs here under
    :func:`blas_single_thread`.  ``func`` must be picklable (a module-level function).
    """
    if workers <= 1:
        with blas_single_thread():
            for item in items:
                yield func(item)
        return
    saved = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update(BLAS_ENV)  # inherited by the spawned children before numpy loads
    try:
        ctx = mp.get_context("spawn")
        with ctx.Pool(processes=workers, initializer=_init_worker) as pool:
            yield from pool.imap(func, items, chunksize=1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
