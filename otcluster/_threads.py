"""The one thread limiter of the project: run a block with fewer torch intra-op threads."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

__all__ = ["limit_threads", "map_batches", "start_numba_pool"]

T = TypeVar("T")


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


def map_batches(fn: Callable[[Any], T], batches: Iterable[Any], threads: int = 1) -> Iterator[T]:
    """``fn(batch)`` of each batch, in order, without gradients; up to ``threads`` at once.

    For inference passes on the CPU with one torch thread: each batch then runs whole on one
    worker thread (itself on one torch thread), so every result is bit for bit the one a
    sequential pass gives, on any number of ``threads``, while the batches use more cores (the
    ``cpu`` preset's demo on 2 cores: a clustering pass 5.1 s instead of 8.2 s, median over its
    30 clusterings, with ``threads=2``; ``docs/video.md``). ``batches`` is iterated in the calling
    thread, one batch ahead of the workers: loading overlaps with the computing. ``fn`` must not
    draw random numbers (their order would depend on the threads' timing) or change shared
    state. Runs sequentially when ``threads`` is 1 or torch runs on more than one thread (the
    workers would then compete for the cores, and torch's thread count is shared by them).

    Examples
    --------
    >>> import torch
    >>> with limit_threads(1):
    ...     out = list(map_batches(lambda x: x * 2, [torch.ones(2), torch.zeros(2)], threads=2))
    >>> [o.tolist() for o in out]
    [[2.0, 2.0], [0.0, 0.0]]
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")

    def call(batch: Any) -> T:
        with torch.no_grad():
            return fn(batch)

    if threads == 1 or torch.get_num_threads() != 1:
        yield from map(call, batches)
        return
    with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,),
                            thread_name_prefix="otcluster-batches") as pool:
        pending: deque[Future[T]] = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(call, batch))
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
