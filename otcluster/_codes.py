"""Soft assignment codes per batch: SwAV's online Sinkhorn, exact or converged.

A training step of SwAV / DINO / lightly turns a batch of prototype scores ``S`` (N, K) into soft
codes ``Q`` with rows summing to 1 and columns (prototypes) holding a prior share ``r`` of the
batch. ``Q = softmax_k(S / eps + log_v)`` for column potentials ``log_v`` found by Sinkhorn's
alternating normalisations. K > N is fine: the codes are soft, only hard labels need N >= K.

Two numerical forms of the same iteration, chosen per batch:

* scaling form (fast path): ``A = exp((S - max S) / eps)`` written once into the output buffer,
  then two mat-vecs per iteration with vectors normalised so that nothing over- or underflows.
  Safe while ``(max S - min S) / eps`` plus the prior's log range stays below ``_SCALING_LIMIT``
  (70 in float32: SwAV's cosine scores at eps = 0.05 span at most 40);
* log domain (fallback, e.g. raw logits with a small eps): log-sum-exp reductions, with one
  temporary N x K buffer per reduction.

Iteration ``n`` is SwAV's ``n``-th column normalisation followed by a row normalisation, so a
fixed iteration count reproduces ``distributed_sinkhorn`` (up to float rounding). With ``tol``,
the column potentials get Anderson-accelerated steps until the relative L1 error of the cluster
marginal is at most ``tol``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from ._distributed import all_reduce_max, all_reduce_sum
from ._solver._priors import validate_prior
from ._typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["CodesResult", "sinkhorn_codes"]

# (max S - min S) / eps + log(r_max / r_min) = D above which the log domain is used. Below it,
# every row and column sum is >= e^-D (float32's smallest normal is e^-87), 1 / row sum <= e^D,
# column sums <= N e^D (float32 max ~e^88.7: fine up to N ~ 1e8 at D = 70). Measured against
# float64 at D = 45..79 (3000 x 500, 20 iterations): max |codes error| 3e-7 in the scaling form,
# 7e-6 to 9e-6 in the float32 log domain, which loses digits to large exponents.
_SCALING_LIMIT = {torch.float32: 70.0, torch.float64: 600.0}
_ANDERSON = 5  # memory of the Anderson acceleration (K-dimensional work only)


class CodesResult(NamedTuple):
    """Result of :func:`sinkhorn_codes` (always this type).

    Attributes
    ----------
    codes : Tensor of shape (N, K)
        Soft assignments of this process's samples: rows sum to 1, columns to ``N_total * prior``
        (up to ``error``). Same device and dtype as ``scores``; never requires grad.
    log_v : Tensor of shape (K,), float64, on the device of ``scores``
        Column potentials: ``codes = softmax(scores / eps + log_v, dim=1)``. Defined up to a
        constant (centred here). Pass them as ``warm_start`` to the next call. Identical on
        every process of a ``process_group``.
    n_iter : int
        Column normalisations made (SwAV's ``sinkhorn_iterations``).
    error : Tensor of shape (), float64
        Relative L1 error of the cluster marginal of ``codes``:
        ``sum_k |codes[:, k].sum() / N_total - prior_k|`` (prior sums to 1), over all processes.
    """

    codes: torch.Tensor
    log_v: torch.Tensor
    n_iter: int
    error: torch.Tensor


class _Scaling:
    """Scaling form on the kernel ``A`` (N, K), held in the output buffer.

    ``row(lv)`` returns ``log(A @ exp(lv - max lv))``; ``col(ls)`` returns
    ``log(sum over processes of exp(-ls) @ A)``. Both drop constants that are the same on every
    process, which the iteration does not see (it is invariant to scaling either vector).
    """

    def __init__(self, buf: torch.Tensor, group: Any):
        # torch's mat-vec, not numpy's: alone, numpy (OpenBLAS) was 3x faster on 4096 x 3000
        # float32, but alternated with torch ops its spinning thread pool and torch's OpenMP pool
        # fought over the 2 cores: 18-24 ms per 256 x 3000 mat-vec instead of 0.02-0.04 ms.
        self.a = buf
        self.group = group
        self.v: torch.Tensor | None = None
        self.s: torch.Tensor | None = None

    def row(self, lv: torch.Tensor) -> torch.Tensor:
        v = torch.exp(lv - lv.max()).to(self.a.dtype)
        s = torch.mv(self.a, v)
        self.v, self.s = v, s
        return torch.log(s.double())

    def col(self, ls: torch.Tensor | None) -> torch.Tensor:
        if ls is None:  # u = 1: plain column sums
            t = self.a.sum(0)  # (with dtype=float64: 1.2-18 ms at 1024 x 3000 against 0.1 ms)
        else:
            u = torch.exp(-ls).to(self.a.dtype)  # in [1/K, e^limit]: no normalisation needed
            t = torch.mv(self.a.t(), u)
        return torch.log(all_reduce_sum(t.double(), self.group))

    def finish(self) -> torch.Tensor:
        """Turn the buffer into the codes of the potentials last passed to ``row``."""
        assert self.v is not None and self.s is not None
        return self.a.mul_(self.v).div_(self.s[:, None])


class _LogDomain:
    """Log-domain form on ``M = (S - max S) / eps`` (N, K), held in the output buffer."""

    def __init__(self, buf: torch.Tensor, group: Any):
        self.m = buf
        self.group = group
        self.ls: torch.Tensor | None = None
        self.lv: torch.Tensor | None = None

    def row(self, lv: torch.Tensor) -> torch.Tensor:
        ls = torch.logsumexp(self.m + lv.to(self.m.dtype), dim=1).double()
        self.ls, self.lv = ls, lv
        return ls

    def col(self, ls: torch.Tensor | None) -> torch.Tensor:
        x = self.m if ls is None else self.m - ls.to(self.m.dtype)[:, None]
        if self.group is None:
            return torch.logsumexp(x, dim=0).double()
        # log-sum-exp across processes: global column maxima, then a sum of exponentials
        mx = all_reduce_max(x.amax(0).double(), self.group)
        t = torch.exp(x - mx.to(x.dtype)).sum(0, dtype=torch.float64)
        return mx + torch.log(all_reduce_sum(t, self.group))

    def finish(self) -> torch.Tensor:
        assert self.lv is not None and self.ls is not None
        m = self.m.add_(self.lv.to(self.m.dtype)).sub_(self.ls.to(self.m.dtype)[:, None])
        return m.exp_()


def _anderson(hist_p: list[torch.Tensor], hist_f: list[torch.Tensor]) -> torch.Tensor:
    """Type-II Anderson mixing of past potentials ``hist_p`` with residuals ``hist_f`` (K,)."""
    P = torch.stack(hist_p, 1)
    F = torch.stack(hist_f, 1)
    dP = P[:, 1:] - P[:, :-1]
    dF = F[:, 1:] - F[:, :-1]
    A = dF.T @ dF
    A = A + 1e-10 * A.diagonal().mean().clamp_min(1e-300) * torch.eye(A.shape[0], dtype=A.dtype,
                                                                          device=A.device)
    # the m x m solve on the CPU: on CUDA it would load cuSOLVER for a 5 x 5 system
    gamma = torch.linalg.solve(A.cpu(), (dF.T @ F[:, -1]).cpu()).to(A.device)
    return P[:, -1] + F[:, -1] - (dP + dF) @ gamma


def _iterate(ops, logr: torch.Tensor, support: torch.Tensor | None, lv0: torch.Tensor | None, *,
             n_fixed: int | None, tol: float, max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Sinkhorn on the column potentials; returns (log_v, iterations, error).

    ``n_fixed``: exactly that many plain iterations (SwAV). Otherwise accelerated iterations
    until the error is at most ``tol`` or ``max_iter`` iterations were made. ``support``: where
    the prior is positive (None: everywhere); potentials are kept finite (0) outside it and
    passed to ``ops`` as -inf there. Validation and the choice of ``ops`` are assumed done.
    """
    r = torch.exp(logr)
    if support is None:
        def mask(t):
            return t

        def ext(t):
            return t
    else:
        def mask(t):
            return torch.where(support, t, torch.zeros_like(t))

        def ext(t):
            return torch.where(support, t, torch.full_like(t, -math.inf))

    def residual(lv):
        """(error, log r - log mass) of the codes of ``lv``; leaves ``ops`` holding them."""
        lm = ext(lv + ops.col(ops.row(ext(lv))))
        lm = lm - torch.logsumexp(lm, 0)
        return (torch.exp(lm) - r).abs().sum(), mask(logr - lm)

    if lv0 is None:  # SwAV's first normalisation of the columns, from uniform rows
        lv, it = mask(logr - ops.col(None)), 1
    else:
        lv, it = lv0, 0
    if n_fixed is not None:
        while it < n_fixed:
            lv, it = mask(logr - ops.col(ops.row(ext(lv)))), it + 1
        return ext(lv), it, residual(lv)[0]
    hist_p: list[torch.Tensor] = []
    hist_f: list[torch.Tensor] = []
    best, best_lv, best_f = math.inf, lv, torch.zeros_like(lv)
    while True:
        err_t, f = residual(lv)
        err = float(err_t)
        if err <= tol or it >= max_iter:
            return ext(lv), it, err_t
        if err > 2.0 * best:  # an accelerated step made things worse: plain step from the best
            hist_p.clear()
            hist_f.clear()
            lv, f = best_lv, best_f
        elif err < best:
            best, best_lv, best_f = err, lv, f
        new = lv + f
        hist_p.append(lv)
        hist_f.append(f)
        if len(hist_p) > _ANDERSON + 1:
            hist_p.pop(0)
            hist_f.pop(0)
        if len(hist_p) >= 2:
            step = _anderson(hist_p, hist_f) - lv
            size = float(step.abs().max())
            if math.isfinite(size):  # trust region: the secant model can extrapolate far
                lim = max(10.0, 4.0 * float(f.abs().max()))
                new = lv + step * min(1.0, lim / max(size, 1e-300))
        lv = mask(new - new.mean())
        it += 1


def _check_prior(prior: Any, K: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Prior (K,) as float64 on the CPU (``None`` is uniform), where it is positive (None:
    everywhere), and the log of its largest over its smallest positive share.

    All on the CPU: on CUDA each of these small checks would wait for the device.
    """
    if prior is None or (isinstance(prior, str) and prior == "uniform"):
        return torch.full((K,), 1.0 / K, dtype=torch.float64), None, 0.0
    if isinstance(prior, str):
        raise ValueError(f"prior must be None, 'uniform' or a vector of K={K} cluster shares, got "
                         f"{prior!r} (otcluster.make_prior builds named priors)")
    r = validate_prior(prior, K, None, atol=1e-6).cpu()
    pos = r[r > 0]
    support = None if pos.numel() == K else r > 0
    return r, support, float(torch.log(pos.max() / pos.min()))


def _check_args(eps: Any, n_iter: Any, tol: Any, max_iter: Any) -> tuple[float, int | None, float]:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a positive number, got {eps!r}") from None
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    if n_iter is not None and tol is not None:
        raise ValueError("give n_iter (a fixed number of iterations, as SwAV) or tol (iterate until "
                         "converged, at most max_iter iterations), not both")
    if tol is None:
        n = 3 if n_iter is None else n_iter
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
        return eps, int(n), math.inf
    tol = float(tol)
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive number, got {tol}")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    return eps, None, tol


def _check_scores(scores: Any, out: Any) -> torch.Tensor:
    if isinstance(scores, np.ndarray):
        scores = torch.from_numpy(np.ascontiguousarray(scores))
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch tensor or numpy array, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must have a floating dtype, got {scores.dtype}")
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D (N samples, K prototypes), got shape {tuple(scores.shape)}")
    if scores.shape[1] < 1:
        raise ValueError("scores has no prototypes (K=0)")
    if out is not None:
        if not isinstance(out, torch.Tensor) or out.shape != scores.shape or out.dtype != scores.dtype \
                or out.device != scores.device or not out.is_contiguous():
            raise ValueError("out must be a contiguous tensor of the shape, dtype and device of scores")
        if out.data_ptr() == scores.data_ptr():
            raise ValueError("out must not be scores itself (scores are never modified)")
    return scores.detach()


def _check_warm(warm_start: Any, K: int, support: torch.Tensor | None, dev: torch.device) -> torch.Tensor:
    """Centred float64 potentials (K,) on ``dev`` from a CodesResult or a vector."""
    w = warm_start.log_v if isinstance(warm_start, CodesResult) else warm_start
    if isinstance(w, (str, bytes)) or not hasattr(w, "__len__"):
        raise TypeError(f"warm_start must be a CodesResult or a vector of K={K} potentials, "
                        f"got {type(w).__name__}")
    w = torch.as_tensor(w).detach().to(dev, torch.float64)
    if w.shape != (K,):
        raise ValueError(f"warm_start has shape {tuple(w.shape)}, expected ({K},)")
    w = w if support is None else torch.where(support, w, torch.zeros_like(w))
    if not bool(torch.isfinite(w).all()):
        raise ValueError("warm_start has non-finite potentials where the prior is positive")
    return w - w.mean()


def _kernel(x: torch.Tensor, eps: float, log_ratio: float, out: torch.Tensor | None, group: Any):
    """Write ``(S - max S) / eps`` (exponentiated in the scaling form) into the output buffer and
    return the form's operations; raise if ``x`` holds NaN or inf."""
    N, dev = x.shape[0], x.device
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    # one pass for the range of the scores; NaN propagates into it, so it is also the check
    mm = torch.aminmax(x) if N else (torch.tensor(math.inf), torch.tensor(-math.inf))
    ext = torch.stack([mm[1].to(dev, torch.float64), -mm[0].to(dev, torch.float64)])
    hi, neg_lo = all_reduce_max(ext, group).tolist()
    if not (math.isfinite(hi) and math.isfinite(neg_lo)):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"scores contain non-finite values ({bad} entries NaN or inf)")
    spread = (hi + neg_lo) / eps + log_ratio
    buf = out if (out is not None and work == x.dtype) else torch.empty(x.shape, dtype=work, device=dev)
    # (S - max) / eps: the constant only rescales the kernel, which no step sees. One pass
    # (S / eps - max / eps) unless max / eps is so large that the difference would lose
    # float32 digits (|max| / eps * 6e-8 relative); then subtract first, exactly.
    if abs(hi) / eps <= 1e3 or work == torch.float64:
        torch.add(torch.tensor(-hi / eps, dtype=work, device=dev), x, alpha=1.0 / eps, out=buf)
    else:
        torch.sub(x, hi, out=buf).mul_(1.0 / eps)
    if spread <= _SCALING_LIMIT[work]:
        return _Scaling(buf.exp_(), group)
    return _LogDomain(buf, group)


def sinkhorn_codes(
    scores: torch.Tensor | NDArray,
    *,
    eps: float = 0.05,
    n_iter: int | None = None,
    tol: float | None = None,
    max_iter: int = 100,
    prior: str | ArrayLike | None = None,
    warm_start: CodesResult | ArrayLike | None = None,
    process_group: ProcessGroup | None = None,
    out: torch.Tensor | None = None,
) -> CodesResult:
    """Soft codes of a batch by Sinkhorn-Knopp, as SwAV's ``distributed_sinkhorn``.

    Solves ``max_Q <Q, S> / eps + H(Q)`` over (N, K) matrices whose rows sum to 1 and whose
    columns sum to ``N * prior``; the solution is ``softmax(S / eps + log_v, dim=1)``. Any K is
    allowed (K > N too). No gradients flow: ``scores`` may require grad, the codes never do.

    Parameters
    ----------
    scores : Tensor of shape (N, K)
        Scores of N samples against K prototypes (SwAV: cosine similarities). Any floating
        dtype, CPU or CUDA; a numpy array is accepted. Never modified.
    eps : float, default 0.05
        Entropic regularisation ε (SwAV's ``epsilon``); the solver's ``lam`` is ``1 / eps``.
    n_iter : int, optional
        Make exactly this many iterations (SwAV's ``sinkhorn_iterations``). Default: 3 when
        ``tol`` is not given. An iteration normalises the columns, then the rows.
    tol : float, optional
        Instead of ``n_iter``: iterate (Anderson-accelerated) until ``error <= tol``, at most
        ``max_iter`` iterations; a :class:`ConvergenceWarning` says when it stopped short.
    max_iter : int, default 100
        Cap on iterations with ``tol``.
    prior : None, "uniform" or array-like of shape (K,)
        Share of the batch each prototype receives (sums to 1; zeros allowed). Default uniform
        (SwAV's ``1 / K``). Use :func:`make_prior` for Gaussian or Zipf shares.
    warm_start : CodesResult or Tensor of shape (K,), optional
        Column potentials (``result.log_v``) of a previous batch to start from instead of
        SwAV's first normalisation.
    process_group : torch.distributed ProcessGroup, optional
        ``scores`` is this process's shard of the batch; column sums are all-reduced (K-vectors
        only, as SwAV) and the result holds this process's codes. Every process of the group
        must call with the same arguments.
    out : Tensor of shape (N, K), optional
        Buffer to write the codes into (contiguous, same dtype and device as ``scores``).
        Reusing one saves the allocation: a fresh 49 MB buffer (4096 x 3000 float32) cost about
        12 ms of page faults on a quiet 2-core CPU (see docs/benchmarks/codes.md).

    Returns
    -------
    CodesResult
        ``codes`` (N, K), ``log_v`` (K,), ``n_iter``, ``error``.

    Examples
    --------
    >>> import torch
    >>> from otcluster import sinkhorn_codes
    >>> z = torch.nn.functional.normalize(torch.randn(256, 128), dim=1)
    >>> prototypes = torch.nn.functional.normalize(torch.randn(3000, 128), dim=1)
    >>> res = sinkhorn_codes(z @ prototypes.T, tol=1e-3)          # K > N is fine
    >>> res.codes.shape, bool(res.error <= 1e-3)
    (torch.Size([256, 3000]), True)
    >>> torch.allclose(res.codes.sum(1), torch.ones(256), atol=1e-4)
    True
    >>> swav = sinkhorn_codes(z @ prototypes.T, eps=0.05, n_iter=3)   # SwAV's numbers
    """
    x = _check_scores(scores, out)
    eps, n_fixed, tol_f = _check_args(eps, n_iter, tol, max_iter)
    N, K = x.shape
    if N == 0 and process_group is None:
        raise ValueError("scores has no samples (N=0)")
    dev = x.device
    r, support, log_ratio = _check_prior(prior, K)
    r = r.to(dev)
    support = None if support is None else support.to(dev)
    lv0 = None if warm_start is None else _check_warm(warm_start, K, support, dev)
    with torch.no_grad():
        ops = _kernel(x, eps, log_ratio, out, process_group)
        lv, it, err = _iterate(ops, torch.log(r), support, lv0, n_fixed=n_fixed, tol=tol_f,
                               max_iter=int(max_iter))
        codes = ops.finish()
        if codes.dtype != x.dtype:
            codes = codes.to(x.dtype) if out is None else out.copy_(codes)
    if n_fixed is None and float(err) > tol_f:
        from . import ConvergenceWarning

        warnings.warn(f"sinkhorn_codes did not reach tol={tol_f:g} in max_iter={int(max_iter)} "
                      f"iterations (error {float(err):.3g}); raise max_iter or tol, or use a larger eps",
                      ConvergenceWarning, stacklevel=2)
    finite = torch.isfinite(lv)  # centred over the prior's support, without waiting for CUDA
    lv = torch.where(finite, lv - torch.where(finite, lv, 0.0).sum() / finite.sum(), lv)
    return CodesResult(codes=codes, log_v=lv, n_iter=it, error=err)
