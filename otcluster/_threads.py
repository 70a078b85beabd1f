"""The one thread limiter of the project: run a block with fewer torch intra-op threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["limit_threads"]


@contextlib.contextmanager
def limit_threads(n: int = 1) -> Iterator[None]:
    """Run the block with at most ``n`` torch intra-op threads (restored afterwards).

    Small tensor ops gain nothing from parallel regions, and on a busy machine waiting for the
    other threads (OpenMP workers spinning on the cores) made tiny ops 10-100x slower (a 64 x 99
    log-mel; small matrix products). DataLoader workers already use one thread.

    Examples
    --------
    >>> with limit_threads(1):
    ...     torch.get_num_threads()
    1
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    old = torch.get_num_threads()
    if old <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
