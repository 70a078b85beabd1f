"""CPU kernels for cluster alignment (numba).

``l1_cost_matrix`` builds ``C[j, k] = sum_i |a[i, j] - b[i, k]|`` with one pass over the rows,
parallel over row chunks, each chunk accumulating into its own ``K x K`` buffer (no atomics,
no ``N x K x K`` temporary). ``pair_switch_search`` is the paper's greedy random pair-switch
search, evaluating each swap in O(1) from ``C``.

Callers validate shapes and dtypes (C-contiguous 2-D float arrays of equal shape); these
functions assume them.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._threads import start_numba_pool

__all__ = ["l1_cost_matrix", "pair_switch_search", "probability_defects"]

# Before any kernel here runs: the pool's start would reset torch's thread count.
start_numba_pool()

# Rows accumulated in the input precision before being flushed into the float64 accumulator:
# short enough that float32 rounding stays negligible, long enough to keep the inner loop
# vectorised.
_FLUSH_ROWS = 256


@numba.njit(parallel=True, fastmath=True, cache=True)
def _l1_cost_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray, n_chunks: int,
                    flush: int) -> None:  # pragma: no cover - compiled
    N, K = a.shape
    chunk = (N + n_chunks - 1) // n_chunks
    for t in prange(n_chunks):
        lo = t * chunk
        hi = min(N, lo + chunk)
        local = np.zeros((K, K), dtype=a.dtype)
        acc = out[t]
        start = lo
        while start < hi:
            stop = min(hi, start + flush)
            for i in range(start, stop):
                ai = a[i]
                bi = b[i]
                for j in range(K):
                    aij = ai[j]
                    row = local[j]
                    for k in range(K):
                        row[k] += abs(aij - bi[k])
            for j in range(K):
                for k in range(K):
                    acc[j, k] += local[j, k]
                    local[j, k] = 0.0
            start = stop


def l1_cost_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``C[j, k] = sum_i |a[i, j] - b[i, k]|`` as a float64 array of shape (K, K).

    Prior validation is assumed: ``a`` and ``b`` are C-contiguous float32 or float64 arrays of
    the same shape (N, K) and dtype.
    """
    N, K = a.shape
    threads = numba.get_num_threads()
    # A few chunks per thread for load balance; each holds a float64 K x K accumulator.
    n_chunks = int(max(1, min(threads * 2, N // 64 + 1)))
    out = np.zeros((n_chunks, K, K), dtype=np.float64)
    _l1_cost_kernel(a, b, out, n_chunks, _FLUSH_ROWS)
    return out.sum(axis=0)


@numba.njit(parallel=True, cache=True)
def _defects_kernel(a: np.ndarray, n_chunks: int, bad: np.ndarray, neg: np.ndarray,
                    dev: np.ndarray) -> None:  # pragma: no cover - compiled
    N, K = a.shape
    chunk = (N + n_chunks - 1) // n_chunks
    for t in prange(n_chunks):
        nb = 0
        nn = 0
        worst = 0.0
        for i in range(t * chunk, min(N, (t + 1) * chunk)):
            s = 0.0
            for k in range(K):
                x = a[i, k]
                if not np.isfinite(x):
                    nb += 1
                elif x < 0:
                    nn += 1
                s += x
            d = abs(s - 1.0)
            if d > worst:
                worst = d
        bad[t] = nb
        neg[t] = nn
        dev[t] = worst


def probability_defects(a: np.ndarray) -> tuple[int, int, float]:
    """One pass over a C-contiguous float array of shape (N, K).

    Returns the number of non-finite entries, the number of negative entries, and the largest
    ``|sum_k a[i, k] - 1|`` over rows among rows without non-finite entries (row sums in
    float64).
    """
    n_chunks = int(max(1, min(numba.get_num_threads() * 2, a.shape[0] // 64 + 1)))
    bad = np.zeros(n_chunks, dtype=np.int64)
    neg = np.zeros(n_chunks, dtype=np.int64)
    dev = np.zeros(n_chunks, dtype=np.float64)
    _defects_kernel(a, n_chunks, bad, neg, dev)
    return int(bad.sum()), int(neg.sum()), float(dev.max())


@numba.njit(cache=True)
def pair_switch_search(cost: np.ndarray, perm: np.ndarray, pairs: np.ndarray,
                       patience: int) -> tuple[float, int]:  # pragma: no cover - compiled
    """Greedy pair-switch search on ``sum_k cost[perm[k], k]``, modifying ``perm`` in place.

    ``pairs`` (n_steps, 2) holds the random positions to try; a swap is kept when it lowers
    the cost. Stops after ``patience`` consecutive steps without improvement. Returns the
    final cost and the number of steps taken.
    """
    K = perm.shape[0]
    total = 0.0
    for k in range(K):
        total += cost[perm[k], k]
    since = 0
    n_steps = pairs.shape[0]
    step = 0
    while step < n_steps:
        j = pairs[step, 0]
        k = pairs[step, 1]
        step += 1
        if j != k:
            pj = perm[j]
            pk = perm[k]
            delta = cost[pk, j] + cost[pj, k] - cost[pj, j] - cost[pk, k]
            if delta < 0.0:
                perm[j] = pk
                perm[k] = pj
                total += delta
                since = 0
                continue
        since += 1
        if since >= patience:
            break
    return total, step
