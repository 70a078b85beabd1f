"""The one thread limiter of the project: run a block with fewer torch intra-op threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["limit_threads", "start_numba_pool"]


@contextlib.contextmanager
def limit_threads(n: int = 1) -> Iterator[None]:
    """Run the block with at most ``n`` torch intra-op threads (restored afterwards).

    Small tensor ops gain nothing from parallel regions, and on a busy machine waiting for the
    other threads (OpenMP workers spinning on the cores) made tiny ops 10-100x slower (a 64 x 99
    log-mel; small matrix products). DataLoader workers already use one thread.

    numba's thread pool is started first: with numba's OpenMP threading layer, the pool's start
    sets the process's OpenMP thread count to numba's, which would undo the limit for every
    torch op after the first numba kernel of the block (measured: a ``training.threads = 1``
    run trained on all cores from its first clustering on, and its weights depended on the
    machine's core count). Started before the limit, the pool leaves it alone.

    Examples
    --------
    >>> with limit_threads(1):
    ...     torch.get_num_threads()
    1
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    start_numba_pool()
    old = torch.get_num_threads()
    if old <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def start_numba_pool() -> None:
    """Start numba's thread pool now, keeping torch's thread count (once per process).

    With numba's OpenMP threading layer the pool's start sets the process's OpenMP thread count
    to numba's, which is torch's too: a ``torch.set_num_threads(1)`` made before (by a user, or
    by :func:`limit_threads`) would silently stop holding. So the count torch had is put back
    right after. The project's numba modules call this when they are imported, before any of
    their kernels runs, and :func:`limit_threads` calls it before it limits torch (a numba kernel
    of someone else's inside the block then finds the pool started). Later kernel launches
    leave the count alone. Nothing in a DataLoader worker (it runs no numba kernel) or without
    numba.
    """
    if torch.utils.data.get_worker_info() is not None:
        return
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; the torch back-end without it
        return
    before = torch.get_num_threads()
    numba.get_num_threads()  # starts the pool (numba.np.ufunc.parallel._launch_threads)
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
