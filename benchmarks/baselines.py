"""Reference implementations of the Sinkhorn variants we compare against (benchmarks only).

Written from the description in ``shared/reference/NOTES.md`` (not copied from any code base):

* :func:`textbook_sinkhorn`: the SeLa/SeLaVi public-code loop. float64, ``A = P**lam`` kept fixed,
  two scaling vectors updated by two mat-vecs per iteration, checked every 10 iterations. It
  records when two stopping rules fire: the fair one (relative L1 column-marginal error
  ``<= tol``, the rule our solver uses) and the code's native one
  (``sum_i |u_i / u_new_i - 1| < 0.1`` over the N sample scalings: loose at small N, tight at
  large N, since the sum grows with N).
* :func:`swav_sinkhorn`: the SwAV-family fixed-iteration normalisation (3 iterations, float32,
  uniform prior). It is fast because it stops early; its column-marginal error is reported.

Both take log-probabilities of shape (N, K) (numpy or torch) and never modify them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

__all__ = ["textbook_sinkhorn", "swav_sinkhorn", "relative_col_error", "row_blocks"]


def row_blocks(n: int, k: int, budget: int = 1 << 22):
    """Slices of rows covering ``n`` rows with about ``budget`` elements each."""
    step = max(1, budget // max(k, 1))
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def relative_col_error(col_sums: Any, prior: Any) -> float:
    """``sum_k |col_sums_k - r_k| / sum_k r_k`` (inf when not finite)."""
    c = np.asarray(col_sums, dtype=np.float64)
    r = np.asarray(prior, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        return float("inf")
    return float(np.abs(c - r).sum() / r.sum())


def _argmax_scaled(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.empty(A.shape[0], dtype=np.int64)
    for b in row_blocks(*A.shape):
        out[b] = (A[b] * v).argmax(1)
    return out


def textbook_sinkhorn(
    log_p: Any,
    lam: float,
    *,
    prior: Any = None,
    tol: float = 1e-3,
    native_tol: float = 0.1,
    check_every: int = 10,
    max_iter: int = 2000,
    time_budget_s: float | None = None,
    stop_when: str = "both",
) -> dict:
    """SeLa-style Sinkhorn-Knopp: fixed ``A = P**lam`` in float64, two mat-vecs per iteration.

    Parameters
    ----------
    log_p : array of shape (N, K)
        Log-probabilities.
    lam : float
        λ; the loop works on ``A = exp(lam * log_p)`` (the public code's ``P ** lam``), which
        under/overflows for large λ: the result then reports ``finite=False``.
    prior : array of shape (K,), optional
        Cluster marginal (default uniform).
    tol : float
        Fair rule: stop when the relative L1 column-marginal error is ``<= tol``.
    native_tol : float
        Native rule: ``sum_i |u_i / u_new_i - 1| < native_tol``.
    check_every : int
        Both rules are checked every ``check_every`` iterations (as in the public code).
    max_iter, time_budget_s
        Caps; a capped result has ``stopped="max_iter"`` / ``"time_budget"``.
    stop_when : {"both", "fair", "native"}
        Keep iterating until this rule (or both) has fired.

    Returns
    -------
    dict
        ``fair`` and ``native``: for each rule that fired, ``time_s`` (excluding the bookkeeping
        done for this report), ``iterations``, ``passes`` (mat-vecs over A), ``col_error``,
        ``labels`` (ndarray (N,)); plus ``setup_s``, ``finite``, ``stopped``, ``iterations``.
    """
    t0 = time.perf_counter()
    x = np.asarray(log_p.numpy() if isinstance(log_p, torch.Tensor) else log_p)
    N, K = x.shape
    r = np.full(K, 1.0 / K) if prior is None else np.asarray(prior, dtype=np.float64)
    c = 1.0 / N
    A = x.astype(np.float64)  # fresh copy; the input is not modified
    A *= lam
    np.exp(A, out=A)  # P ** lam, kept fixed for the whole loop
    u = np.full(N, c)
    v = np.ones(K)
    setup = time.perf_counter() - t0
    paused = 0.0  # time spent on report-only work (labels, final errors), excluded
    want = {"both": ("fair", "native"), "fair": ("fair",), "native": ("native",)}[stop_when]
    out: dict = {"setup_s": setup, "finite": True, "stopped": "converged"}
    finite = True
    it = 0
    with np.errstate(all="ignore"):
        while True:
            Atu = A.T @ u  # pass 1
            elapsed = time.perf_counter() - t0 - paused
            if it > 0 and it % check_every == 0 and "fair" not in out:
                err = relative_col_error(v * Atu, r)
                if err <= tol:
                    tp = time.perf_counter()
                    out["fair"] = {"time_s": elapsed, "iterations": it, "passes": 2 * it + 1,
                                   "col_error": err, "labels": _argmax_scaled(A, v)}
                    paused += time.perf_counter() - tp
            if all(k in out for k in want):
                break
            if it >= max_iter or (time_budget_s is not None and elapsed > time_budget_s):
                out["stopped"] = "max_iter" if it >= max_iter else "time_budget"
                break
            v = r / Atu
            u_new = c / (A @ v)  # pass 2
            if not (np.isfinite(v).all() and np.isfinite(u_new).all()):
                finite = False
                out["stopped"] = "non_finite"
                u = u_new
                it += 1
                break
            if it % check_every == 0 and "native" not in out:
                nerr = float(np.abs(u / u_new - 1.0).sum())
                if nerr < native_tol:
                    elapsed = time.perf_counter() - t0 - paused
                    tp = time.perf_counter()
                    colsum = v * (A.T @ u_new)
                    out["native"] = {"time_s": elapsed, "iterations": it + 1, "passes": 2 * it + 2,
                                     "col_error": relative_col_error(colsum, r),
                                     "native_error": nerr, "labels": _argmax_scaled(A, v)}
                    paused += time.perf_counter() - tp
            u = u_new
            it += 1
        total = time.perf_counter() - t0 - paused
        out["finite"] = finite
        out["iterations"] = it
        out["time_s"] = total
        if finite:
            out["col_error"] = relative_col_error(v * (A.T @ u), r)
            out["labels"] = _argmax_scaled(A, v)
        else:
            out["col_error"] = float("inf")
            out["labels"] = None
    return out


def swav_sinkhorn(
    log_p: Any, lam: float = 20.0, *, n_iter: int = 3, shift_rows: bool = True
) -> dict:
    """SwAV-style normalisation: ``n_iter`` alternating row/column scalings in float32.

    ``Q = exp(lam * s)`` with ``s`` the scores (SwAV: cosine similarities, ``lam = 1/epsilon``);
    with ``shift_rows`` each row is shifted by its max first (does not change the problem, only
    the row scaling), without it raw log-probabilities or logits under/overflow. The last step
    normalises the samples, so rows are exact and the cluster marginal is what is off.

    Returns
    -------
    dict
        ``time_s``, ``iterations``, ``col_error`` (relative L1), ``labels`` (ndarray (N,)),
        ``finite`` (the plan has no NaN/inf), ``nan_rows`` (rows without a finite label).
    """
    x = log_p if isinstance(log_p, torch.Tensor) else torch.from_numpy(np.asarray(log_p))
    t0 = time.perf_counter()
    s = x.float()
    if shift_rows:
        z = (s - s.amax(1, keepdim=True)).mul_(lam)
    else:
        z = s * lam
    Q = torch.exp_(z).T  # (K, N) view, as SwAV transposes the scores
    K, B = Q.shape
    Q /= Q.sum()
    for _ in range(n_iter):
        Q /= Q.sum(dim=1, keepdim=True)
        Q /= K
        Q /= Q.sum(dim=0, keepdim=True)
        Q /= B
    dt = time.perf_counter() - t0
    plan = Q.T  # (N, K), rows sum to 1/B
    col = plan.double().sum(0).numpy() if K * B <= 1 << 26 else _col_sums_blocked(plan)
    bad = ~torch.isfinite(plan).all(1)
    labels = plan.argmax(1).numpy()
    return {"time_s": dt, "iterations": n_iter, "passes": 2 * n_iter + 1,
            "col_error": relative_col_error(col, np.full(K, 1.0 / K)), "labels": labels,
            "finite": not bool(bad.any()), "nan_rows": int(bad.sum())}


def _col_sums_blocked(plan: torch.Tensor) -> np.ndarray:
    acc = torch.zeros(plan.shape[1], dtype=torch.float64)
    for b in row_blocks(*plan.shape):
        acc += plan[b].double().sum(0)
    return acc.numpy()
