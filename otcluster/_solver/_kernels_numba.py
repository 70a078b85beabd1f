"""Fused CPU kernels for the dense Sinkhorn iteration (numba, parallel over row chunks).

All arrays are 3-D ``(H, N, K)`` (heads, samples, clusters), C-contiguous. Each kernel reads
the N x K matrix once. Callers validate shapes and dtypes; these functions assume them.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from .._threads import start_numba_pool

__all__ = ["assign_by_deficit", "build_kernel", "build_kernel_f32", "fused_pass", "row_argmax",
           "scale_plan", "n_chunks"]

# Before any kernel here runs: the pool's start would reset torch's thread count.
start_numba_pool()

_CACHE = True


_MAX_CHUNKS = 64  # per head: load balance for up to ~16 threads, small partial sums


def n_chunks(n_rows: int) -> int:
    """Row chunks per head. Independent of the thread count (it was ``8 * threads``): each
    chunk's column sums are added in row order and the chunks in chunk order, so 1, 2 or 16
    threads give bit-identical potentials and labels."""
    return int(max(1, min(n_rows // 256 + 1, _MAX_CHUNKS)))


@numba.njit(parallel=True, fastmath=False, cache=_CACHE)
def build_kernel(x, lam, g, out, rowmax, ncph):  # pragma: no cover - compiled
    """out[h,i,k] = exp(lam*x[h,i,k] + g[h,k] - m[h,i]), m = row max. Returns #non-finite inputs."""
    H, N, K = x.shape
    chunk = (N + ncph - 1) // ncph
    bad = np.zeros(H * ncph, dtype=np.int64)
    for t in prange(H * ncph):
        h = t // ncph
        lo = (t % ncph) * chunk
        hi = min(N, lo + chunk)
        nb = 0
        for i in range(lo, hi):
            m = -np.inf
            for k in range(K):
                z = lam * x[h, i, k] + g[h, k]
                if not (abs(z) < np.inf):
                    nb += 1
                elif z > m:
                    m = z
            rowmax[h, i] = m
            for k in range(K):
                z = lam * x[h, i, k] + g[h, k] - m
                out[h, i, k] = math.exp(z) if z > -600.0 else 0.0
        bad[t] = nb
    return bad.sum()


_FAST = {"reassoc", "contract", "arcp", "nsz", "afn"}  # fast math without assuming finite values
_FLUSH_LOG2 = -80.0  # log2 of the smallest kept kernel entry (relative to the row max)


@numba.njit(fastmath=True, inline="always", cache=_CACHE)
def _exp2_frac(f):  # pragma: no cover - compiled
    """2**f for f in [0, 1): Taylor series of exp(f ln 2), relative error < 1e-6 in float32."""
    return 1.0 + f * (0.6931471805599453 + f * (0.2402265069591007 + f * (0.05550410866482158 + f * (
        0.009618129107628477 + f * (0.0013333558146428443 + f * (0.00015403530393381606
                                                                  + f * 1.525273380405984e-05))))))


@numba.njit(parallel=True, fastmath=_FAST, cache=_CACHE)
def build_kernel_f32(x, lam, g, out, rowmax, ncph):  # pragma: no cover - compiled
    """float32 ``build_kernel`` with a vectorised exp (2**n by exponent bits times a polynomial).

    Entries below 2**-80 of their row's maximum are flushed to 0: they cannot change a float32
    row sum, and keeping them lets products with the scalings fall into the denormal range,
    which is ~100x slower on x86 (this made lam=100 four times slower than lam=20).
    """
    H, N, K = x.shape
    chunk = (N + ncph - 1) // ncph
    bad = np.zeros(H * ncph, dtype=np.int64)
    for t in prange(H * ncph):
        h = t // ncph
        lo = (t % ncph) * chunk
        hi = min(N, lo + chunk)
        bits = np.empty(K, dtype=np.int32)
        scale = bits.view(np.float32)
        poly = np.empty(K, dtype=np.float32)
        gh = g[h]
        nb = 0
        for i in range(lo, hi):
            xr = x[h, i]
            m = -np.inf
            for k in range(K):
                z = lam * xr[k] + gh[k]
                nb += not (abs(z) < np.inf)
                m = max(m, z)
            rowmax[h, i] = m
            for k in range(K):
                z = (lam * xr[k] + gh[k] - m) * 1.4426950408889634
                keep = z > _FLUSH_LOG2
                z = max(z, _FLUSH_LOG2)
                n = math.floor(z)
                poly[k] = _exp2_frac(z - n) if keep else 0.0
                bits[k] = (np.int32(n) + 127) << 23
            o = out[h, i]
            for k in range(K):
                o[k] = poly[k] * scale[k]
        bad[t] = nb
    return bad.sum()



@numba.njit(parallel=True, fastmath=True, cache=_CACHE)
def fused_pass(kmat, v, u, partial, ncph):  # pragma: no cover - compiled
    """One pass: s_i = K_i.v, u_i = 1/s_i, and per-chunk column sums of K_ik u_i.

    Column sums accumulate in the kernel's precision over runs of 64 rows, then in float64.
    """
    H, N, K = kmat.shape
    chunk = (N + ncph - 1) // ncph
    for t in prange(H * ncph):
        h = t // ncph
        lo = (t % ncph) * chunk
        hi = min(N, lo + chunk)
        acc = np.zeros(K, dtype=np.float64)
        acc32 = np.zeros(K, dtype=kmat.dtype)
        vh = v[h]
        n_run = 0
        for i in range(lo, hi):
            row = kmat[h, i]
            s = 0.0
            for k in range(K):
                s += row[k] * vh[k]
            ui = 1.0 / s if s > 0.0 else 0.0
            u[h, i] = ui
            uk = ui
            for k in range(K):
                acc32[k] += row[k] * uk
            n_run += 1
            if n_run == 64:
                for k in range(K):
                    acc[k] += acc32[k]
                    acc32[k] = 0.0
                n_run = 0
        for k in range(K):
            partial[t, k] = acc[k] + acc32[k]


@numba.njit(parallel=True, fastmath=True, cache=_CACHE)
def row_argmax(kmat, v, labels, ncph):  # pragma: no cover - compiled
    """labels[h, i] = argmax_k kmat[h, i, k] * v[h, k] (the plan's row argmax)."""
    H, N, K = kmat.shape
    chunk = (N + ncph - 1) // ncph
    for t in prange(H * ncph):
        h = t // ncph
        lo = (t % ncph) * chunk
        hi = min(N, lo + chunk)
        vh = v[h]
        for i in range(lo, hi):
            row = kmat[h, i]
            best = row[0] * vh[0]
            arg = 0
            for k in range(1, K):
                w = row[k] * vh[k]
                if w > best:
                    best = w
                    arg = k
            labels[h, i] = arg


@numba.njit(cache=_CACHE)
def assign_by_deficit(q, deficit, rho, out):  # pragma: no cover - compiled
    """Serial, rows in order: out[i] = the cluster of largest remaining deficit among those where
    row i's share q[i, k] is at least rho times its largest share; that deficit drops by 1.
    First of ties; deterministic."""
    n, K = q.shape
    for i in range(n):
        top = 0.0
        for k in range(K):
            top = max(top, q[i, k])
        arg = 0
        best = -np.inf
        for k in range(K):
            if q[i, k] >= rho * top and deficit[k] > best:
                best = deficit[k]
                arg = k
        out[i] = arg
        deficit[arg] -= 1.0


@numba.njit(parallel=True, fastmath=True, cache=_CACHE)
def scale_plan(kmat, u, v, c):  # pragma: no cover - compiled
    """In place: kmat[h,i,k] *= c * u[h,i] * v[h,k] (turns the kernel into the plan)."""
    H, N, K = kmat.shape
    for r in prange(H * N):
        h = r // N
        i = r % N
        a = c * u[h, i]
        for k in range(K):
            kmat[h, i, k] = kmat[h, i, k] * a * v[h, k]
