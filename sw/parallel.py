"""Sharing work among the host's cores: how many there are, and Python threads running NumPy
work side by side with BLAS held to one thread each (so they do not oversubscribe the cores)."""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


@functools.cache
def _blas():
    from threadpoolctl import ThreadpoolController    # scans the loaded libraries: once
    return ThreadpoolController()


_lock = threading.Lock()
_holders = 0
_limiter = None


def _hold_blas(acquire: bool) -> None:
    """Counted across threads: the first holder limits BLAS to one thread, the last one
    gives back what was there before."""
    global _holders, _limiter
    with _lock:
        if acquire:
            if _holders == 0:
                _limiter = _blas().limit(limits=1, user_api="blas")
            _holders += 1
        else:
            _holders -= 1
            if _holders == 0:
                _limiter.restore_original_limits()
                _limiter = None


def map_threads(fn, items: list, workers: int) -> list:
    """``[fn(item) for item in items]``, on up to ``workers`` threads, BLAS on one thread each
    meanwhile; the error of the first item (in order) that raised one is raised, after every
    item has finished."""
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    _hold_blas(True)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    finally:
        _hold_blas(False)
