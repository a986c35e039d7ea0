"""Run a compiled kernel over a chunk's animals, split into groups on several threads.

A kernel takes the range of animals it runs (``first``, ``stop``) and writes each animal's
results into rows of preallocated outputs; it releases the GIL, so groups of animals run on
threads at once. One compiled function then serves one thread and many: with numba's
``parallel=True`` loops instead, every kernel was compiled a second time for its threads,
and that copy took twice as long to build as the plain one (a fresh install's first fits of
the five default and free-running rules spent about four minutes compiling, now one and a
half: ``benchmarks/bench_compile.py``). Each animal's rows are its own and the gradients are
summed over animals afterwards in a fixed order, so no result depends on the number of
threads.

The thread count is numba's (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba.np.ufunc import parallel as _numba_parallel

__all__ = ["kernel_threads", "over_animals", "threads_for"]

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def threads_for(n_animals: int, n_trials: int, work_per_thread: int) -> int:
    """Return how many threads share a chunk of ``n_animals`` x ``n_trials`` trials.

    Parameters
    ----------
    n_animals, n_trials : int
        The chunk's shape.
    work_per_thread : int
        Animal-trials below which a thread is not worth waking.

    Returns
    -------
    int
        At least 1, at most numba's thread count and the number of animals.

    Examples
    --------
    >>> threads_for(1, 10_000, 1_000)
    1
    """
    enough = (n_animals * n_trials) // max(int(work_per_thread), 1)
    return int(max(1, min(kernel_threads(), n_animals, enough)))


def kernel_threads() -> int:
    """Return the most threads a chunk may use: numba's thread count.

    Unlike :func:`numba.get_num_threads`, this does not start numba's threading layer, whose
    OpenMP layer sets the OpenMP thread count that torch shares (torch's idle threads then
    spun against the kernels' and a ``dnn`` epoch ran 1.5 times slower). Until something has
    started the layer (as :func:`numba.set_num_threads` does), the configured count
    (``NUMBA_NUM_THREADS``) is numba's count.

    Examples
    --------
    >>> kernel_threads() >= 1
    True
    """
    if getattr(_numba_parallel, "_is_initialized", True):
        return numba.get_num_threads()
    return numba.config.NUMBA_NUM_THREADS


def over_animals(kernel: Callable, n_animals: int, n_trials: int, work_per_thread: int,
                 *args) -> None:
    """Call ``kernel(first, stop, *args)`` over contiguous groups of animals, on threads.

    The calling thread runs the last group itself. Exceptions in any group are raised here.

    Parameters
    ----------
    kernel : callable
        A compiled kernel whose first two arguments are the animals' range.
    n_animals, n_trials : int
        The chunk's shape.
    work_per_thread : int
        See :func:`threads_for`.
    *args
        The kernel's other arguments, the outputs it fills among them.
    """
    n = threads_for(n_animals, n_trials, work_per_thread)
    if n == 1:
        kernel(0, n_animals, *args)
        return
    bounds = np.linspace(0, n_animals, n + 1).round().astype(int)
    pool = _executor()
    futures = [pool.submit(kernel, int(first), int(stop), *args)
               for first, stop in zip(bounds[:-2], bounds[1:-1], strict=True)]
    try:
        kernel(int(bounds[-2]), int(bounds[-1]), *args)
    finally:
        for future in futures:
            future.result()


def _forget_pool() -> None:
    # a forked child inherits the pool object but none of its threads: work submitted to it
    # would wait forever, so the child starts a pool of its own
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # numba.set_num_threads cannot go above the configured count, so neither do we
            _pool = ThreadPoolExecutor(max(numba.config.NUMBA_NUM_THREADS - 1, 1),
                                       thread_name_prefix="ibl_learnrules-kernel")
        return _pool
