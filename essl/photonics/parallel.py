"""One BLAS thread per worker, and a small process pool (reference/photonics.md section 7.4).

Multi-threaded OpenBLAS is 3-10x *slower* on the small dense matrices of the solver, so every
labelling process runs with one BLAS thread: worker processes get ``OPENBLAS_NUM_THREADS=1``
(and the MKL/OMP equivalents) in their environment before numpy loads, and the current process
is limited at run time through OpenBLAS's ``*_set_num_threads`` entry point (the same approach
as ``threadpoolctl``, which is used instead when it is installed).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["BLAS_ENV", "blas_single_thread", "imap_workers"]

#: Environment that pins BLAS / OpenMP libraries to one thread.
BLAS_ENV: dict[str, str] = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}

_SET_NAMES = ("openblas_set_num_threads", "openblas_set_num_threads64_",
              "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
_GET_NAMES = ("openblas_get_num_threads", "openblas_get_num_threads64_",
              "scipy_openblas_get_num_threads", "scipy_openblas_get_num_threads64_")


def _loaded_openblas() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries mapped into this process (Linux ``/proc/self/maps``)."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1] if "/" in line else ""
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        return []
    libs = []
    for path in paths:
        with contextlib.suppress(OSError):
            libs.append(ctypes.CDLL(path))
    return libs


def _first_symbol(lib: ctypes.CDLL, names: tuple[str, ...]) -> Any:
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Context manager: run the enclosed code with one BLAS thread, then restore the old count."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    import numpy  # noqa: F401  (make sure numpy's OpenBLAS is loaded)
    import scipy.linalg  # noqa: F401  (and scipy's)

    restore = []
    for lib in _loaded_openblas():
        setter, getter = _first_symbol(lib, _SET_NAMES), _first_symbol(lib, _GET_NAMES)
        if setter is None:
            continue
        old = int(getter()) if getter is not None else None
        setter(1)
        restore.append((setter, old))
    try:
        yield
    finally:
        for setter, old in restore:
            if old is not None:
                setter(old)


def _init_worker() -> None:
    os.environ.update(BLAS_ENV)


def imap_workers(func: Callable[[Any], Any], items: Iterable[Any],
                 workers: int = 1) -> Iterator[Any]:
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
