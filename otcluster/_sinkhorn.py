"""Sinkhorn-Knopp label assignment (paper eq. 3): problem checks, the iteration, the result.

Solves ``min_Q <Q, -log P> + (1/lam) KL(Q || r c^T)`` over plans with row sums ``c = 1/N`` and
column sums ``r`` (the cluster prior). The solution is ``Q = diag(u) exp(lam log P) diag(v)``;
labels are ``argmax_k Q_ik``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch

from ._solver import _ops
from ._solver._priors import make_prior, sort_prior, validate_prior
from ._validation import as_float_tensor, check_lam

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_features", "ConvergenceWarning"]


class ConvergenceWarning(UserWarning):
    """The solver stopped at ``max_iter`` before reaching ``tol``."""


class SinkhornResult(NamedTuple):
    """Result of :func:`sinkhorn` and :func:`sinkhorn_features` (always this type).

    For a 2-D problem (N, K) the head dimension is dropped from every field.

    Attributes
    ----------
    labels : LongTensor of shape (N,) or (H, N)
        ``argmax_k`` of the plan.
    plan : Tensor of shape (N, K) or (H, N, K), or None
        The transport plan (only with ``return_plan=True``): rows sum to ``1/N``,
        columns to ``prior``.
    n_iter : int
        Passes over the data made (each pass is one Sinkhorn iteration).
    converged : BoolTensor of shape () or (H,)
        Whether the relative L1 column-marginal error reached ``tol``.
    error : Tensor of shape () or (H,)
        Final relative L1 column-marginal error ``sum_k |Q^T 1 - r|_k / sum_k r_k``.
    log_u : Tensor of shape (N,) or (H, N), float64
        Row potentials (this process's rows).
    log_v : Tensor of shape (K,) or (H, K), float64
        Column potentials; pass the result (or this) as ``warm_start`` to the next call.
        ``plan = exp(log_u[:, None] + lam * log_p + log_v[None, :])``.
    prior : Tensor of shape (K,) or (H, K), float64
        The column marginal used, after permutation sorting.
    """

    labels: torch.Tensor
    plan: torch.Tensor | None
    n_iter: int
    converged: torch.Tensor
    error: torch.Tensor
    log_u: torch.Tensor
    log_v: torch.Tensor
    prior: torch.Tensor


def _resolve_prior(prior: Any, K: int, H: int, batched: bool) -> tuple[torch.Tensor, bool]:
    """Return (prior of shape (H, K) float64, is_uniform)."""
    if prior is None or (isinstance(prior, str) and prior == "uniform"):
        return torch.full((H, K), 1.0 / K, dtype=torch.float64), True
    if isinstance(prior, str):
        p = make_prior(prior, K, n_heads=H, seed=0)
    else:
        p = validate_prior(prior, K, H if batched else None)
        if p.dim() == 1:
            p = p.expand(H, K).clone()
    uniform = bool(((p - 1.0 / K).abs() < 1e-12).all())
    return p, uniform


def _resolve_warm(warm_start: Any, H: int, K: int) -> torch.Tensor | None:
    if warm_start is None:
        return None
    g = warm_start.log_v if isinstance(warm_start, SinkhornResult) else warm_start
    g = torch.as_tensor(g).detach().to("cpu", torch.float64)
    if g.dim() == 1:
        g = g.expand(H, g.shape[0]) if H > 1 and g.shape[0] == K else g.reshape(1, -1)
    if tuple(g.shape) != (H, K):
        raise ValueError(f"warm_start has shape {tuple(g.shape)}, expected ({K},) or ({H}, {K})")
    if not bool(torch.isfinite(g).all()):
        raise ValueError("warm_start potentials contain non-finite values")
    return g - g.amax(-1, keepdim=True)  # potentials are defined up to a constant per head


def _check_finite_blocks(t: torch.Tensor, name: str, block_rows: int) -> None:
    """Raise if ``t`` has NaN or inf, checking ``block_rows`` rows at a time: a whole-tensor
    ``isfinite`` would allocate a boolean copy of the features (2M x 512 float32: 1 GiB more)."""
    bad = 0
    for start in range(0, t.shape[0], block_rows):
        block = t[start:start + block_rows]
        if not bool(torch.isfinite(block).all()):
            bad += int((~torch.isfinite(block)).sum())
    if bad:
        raise ValueError(f"{name} contains non-finite values ({bad} entries NaN or inf)")


def _check_sizes(N: int, K: int, name: str) -> None:
    if N == 0:
        raise ValueError(f"{name} has no samples (N=0)")
    if K < 2:
        raise ValueError(f"{name} must have at least K=2 clusters, got K={K}")


def _check_common(tol: float, max_iter: int, overrelax: float, anderson: int) -> None:
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive number, got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    if not (0.0 < overrelax < 2.0):
        raise ValueError(f"overrelax must be in (0, 2), got {overrelax}")
    if int(anderson) != anderson or anderson < 0:
        raise ValueError(f"anderson must be a non-negative integer, got {anderson}")


def _allreduce(t: torch.Tensor, group) -> torch.Tensor:
    if group is None:
        return t
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


_TRUST = 20.0  # nats: largest accelerated move of a column potential in one iteration
# passes without a new best error (any head still above tol) after which acceleration is
# paused (plain passes, for up to 10 x _STALL passes without progress): plain Sinkhorn decreases
# the KL objective at every pass, Anderson mixing has no such guarantee and can cycle on
# plateaus of nearly hard assignments (small N, large lam * logit spread). Measured on 4500
# random tiny problems (N 8-60, K 2-8, lam 2-200): solves where acceleration failed but plain
# Sinkhorn converged went from 171 to 15.
_STALL = 30


def _anderson_step(hist_p: list[torch.Tensor], hist_f: list[torch.Tensor]) -> torch.Tensor:
    """Type-II Anderson mixing of the column potentials, batched over heads.

    ``hist_p[j]`` are past potentials (H, K) and ``hist_f[j]`` their fixed-point residuals.
    """
    P = torch.stack(hist_p, -1)  # (H, K, m+1)
    F = torch.stack(hist_f, -1)
    dP = P[..., 1:] - P[..., :-1]
    dF = F[..., 1:] - F[..., :-1]
    A = dF.transpose(1, 2) @ dF  # (H, m, m)
    scale = A.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-300)
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    A = A + 1e-10 * scale[:, None, None] * eye
    gamma = torch.linalg.solve(A, dF.transpose(1, 2) @ F[..., -1:])  # (H, m, 1)
    return P[..., -1] + F[..., -1] - ((dP + dF) @ gamma)[..., 0]


def _solve(ops, prior, uniform, *, permute, tol, max_iter, overrelax, anderson, g0, group, device,
           return_plan, batched) -> SinkhornResult:
    """The Sinkhorn-Knopp loop on (H, K) vectors; ``ops`` (see ``_ops``) does the N x K work."""
    H, N, K = ops.shape
    n_total = _allreduce(torch.tensor([float(N)], dtype=torch.float64, device=device), group)
    n_total = float(n_total.item())
    c = 1.0 / n_total
    thresh = 30.0 if ops.kmat_dtype == torch.float32 else 200.0

    g = torch.zeros((H, K), dtype=torch.float64) if g0 is None else g0.clone()
    ops.build(g.to(device))
    if group is not None:
        # the prior must be identical on every rank (a Gaussian draw, a user vector): take rank 0's
        import torch.distributed as dist

        prior_d = prior.to(device)
        dist.broadcast(prior_d, src=dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0,
                       group=group)
        prior = prior_d.cpu()
    logv = torch.zeros((H, K), dtype=torch.float64)

    # A column whose kernel entries are all flushed to 0 (mass 0) says only that its potential is
    # far too low, not how far: its step is capped at a probe that keeps every entry of that column
    # below its row's maximum (the kernel flushes entries below e^-55 of the row max in float32,
    # e^-600 in float64). An uncapped step (log r - log 1e-300 ~ 690) overshot, emptied every other
    # column, and the potentials ping-ponged and diverged (lam=1000, or a column 1000 below the rest).
    probe = 40.0 if ops.kmat_dtype == torch.float32 else 400.0

    def measure():
        acc = _allreduce(ops.fused(torch.exp(logv).to(device)).to(device), group).cpu()
        if ops.n_bad:
            raise ValueError(f"log_p contains non-finite values ({ops.n_bad} entries NaN or inf)")
        return (c * acc * torch.exp(logv)).clamp_min(1e-300)

    mass = measure()
    n_iter = 1
    r = sort_prior(prior, mass) if (permute and not uniform) else prior
    logr = torch.log(r.clamp_min(1e-300))
    err = (mass - r).abs().sum(-1)
    best = err.clone()
    hist_p: list[torch.Tensor] = []
    hist_f: list[torch.Tensor] = []
    # centred potentials have K - 1 degrees of freedom: a longer memory makes the secant system
    # singular and the mixing stalls (seen: K=3, memory 5, error stuck at 0.34 for 1000 passes)
    anderson = min(anderson, max(K - 2, 0))
    radius = torch.full((H, 1), _TRUST, dtype=torch.float64)  # trust radius of accelerated steps
    stalled = 0  # passes since the last new best error
    paused = False  # acceleration paused after a stall (plain passes)

    def move(new):
        """Set the centred potentials to ``new``, absorbing them into the kernel when large."""
        nonlocal g, logv
        new = new - new.mean(-1, keepdim=True)  # potentials are defined up to a constant
        logv = new - g
        if ops.absorb_every_pass or logv.abs().amax() > thresh:
            # absorb the scalings into the kernel (log-domain stabilisation)
            g = new
            logv = torch.zeros_like(g)
            ops.build(g.to(device))

    while bool((err > tol).any()) and n_iter < max_iter:
        f = overrelax * (logr - torch.log(mass))  # fixed-point residual of the column update
        empty = mass <= 1e-300
        pot = g + logv
        if bool(empty.any()):  # probe steps are not fixed-point residuals: no acceleration
            f = torch.where(empty, f.clamp_max(probe), f)
            hist_p.clear()
            hist_f.clear()
        new = pot + f
        plain = new  # the plain Sinkhorn step, kept to replace a rejected accelerated one
        accelerated = False
        if anderson > 0 and not paused and not bool(empty.any()):
            hist_p.append(pot)
            hist_f.append(f)
            if len(hist_p) > anderson + 1:
                hist_p.pop(0)
                hist_f.pop(0)
            if len(hist_p) >= 2:
                new = _anderson_step(hist_p, hist_f)
                bad = ~torch.isfinite(new).all(-1, keepdim=True)
                if bool(bad.any()):  # singular secant system (seen at N=12, K=3): plain step
                    new = torch.where(bad, pot + f, new)
                    # a head already within tol has a zero residual, hence a singular system at
                    # every pass: restarting the shared memory for it stalled the other heads
                    if bool((bad[:, 0] & (err > tol)).any()):
                        hist_p.clear()
                        hist_f.clear()
                # trust region: where the residual hardly responds to the potentials (large lam:
                # nearly hard assignments) the secant model extrapolates without bound (1e9 nats
                # seen at lam=1000, which emptied every column but one and never recovered)
                # The radius shrinks for a head whose accelerated step was rejected (below), so
                # a rejected extrapolation is not repeated from the same state in a loop (seen:
                # 3 heads, N=34, K=7, lam=45: a 5-pass cycle for 5000 passes), never below the
                # plain step's own size.
                step = new - pot
                size = step.abs().amax(-1, keepdim=True)
                lim = torch.maximum(radius, f.abs().amax(-1, keepdim=True))
                new = pot + step * (lim / size.clamp_min(1e-300)).clamp_max(1.0)
                accelerated = True
        # a head already within tol stays where it is while the others go on: stepping it (an
        # extrapolation from a zero residual is noise, up to the trust radius) knocked it out of
        # tol and restarted the shared memory at every other pass (seen: 3 heads, N=34, K=7,
        # lam=45: one head at error 0.0104 after 5000 passes; alone: 27)
        new = torch.where((err <= tol)[:, None], pot, new)
        move(new)
        mass = measure()
        n_iter += 1
        err = (mass - r).abs().sum(-1)
        # heads already within tol are left out: their error is rounding noise (1e-16 against a
        # best of 1e-16), which restarted the memory at every pass and stalled the other heads
        # (seen: 3 heads, N=7, K=6, one head stuck at error 0.0136 for 5000 passes; alone: 148)
        worse = (err > 2.0 * best) & (err > tol)
        if bool(worse.any()):  # safeguard: restart the acceleration's memory ...
            hist_p.clear()
            hist_f.clear()
            radius = torch.where(worse[:, None], radius / 4.0, radius)
            if accelerated and n_iter < max_iter:
                # ... and undo the accelerated step where it made things worse: take the plain
                # step from where that head was. Keeping the bad iterate could land on a plateau
                # of nearly hard assignments, from which each later extrapolation jumped again
                # (seen: N=12, K=3, lam=39, float32: error 0.46 after 5000 passes; plain: 192).
                move(torch.where(worse[:, None], plain, g + logv))
                mass = measure()
                n_iter += 1
                err = (mass - r).abs().sum(-1)
        if accelerated:  # the radius grows back only with progress, so a cycle shrinks it
            radius = torch.where((err < best)[:, None], (radius * 2.0).clamp_max(_TRUST), radius)
        progress = bool(((err < best) & (err > tol)).any())
        stalled = 0 if progress else stalled + 1
        best = torch.minimum(best, err)
        if paused and stalled >= 10 * _STALL:
            # plain passes stalled too (float32 rounding can stop plain Sinkhorn short of tol
            # where accelerated steps get through): accelerate again, from this better state
            paused, stalled = False, 0
        elif anderson > 0 and stalled >= _STALL:
            # acceleration cycling without progress: plain passes, which decrease the KL
            # objective at every pass (though not always the reported column error)
            # (seen: N=10, K=3, lam=36, float32: error 0.115 after 5000 accelerated passes;
            # tol in 216 plain ones)
            paused, stalled = True, 0
            hist_p.clear()
            hist_f.clear()

    converged = err <= tol
    log_v = g + logv
    log_u = ops.row_potential().to(torch.float64) + math.log(c)
    if not bool(converged.all()):
        warnings.warn(
            f"Sinkhorn did not reach tol after max_iter={max_iter} iterations "
            f"(error {err.max().item():.3g}); increase max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    v = torch.exp(logv).to(device)
    labels = ops.labels(v)
    plan = ops.plan(v, c) if return_plan else None
    sq = (lambda t: t) if batched else (lambda t: t[0] if t is not None else None)
    return SinkhornResult(
        labels=sq(labels), plan=sq(plan), n_iter=int(n_iter), converged=sq(converged),
        error=sq(err), log_u=sq(log_u), log_v=sq(log_v), prior=sq(r),
    )


def sinkhorn(
    log_p: Any,
    *,
    lam: float = 20.0,
    prior: Any = None,
    permute_prior: bool = True,
    tol: float = 1e-3,
    max_iter: int = 1000,
    warm_start: Any = None,
    return_plan: bool = False,
    overrelax: float = 1.0,
    anderson: int = 5,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    process_group: Any = None,
) -> SinkhornResult:
    """Prior-constrained Sinkhorn-Knopp label assignment (SeLa / SeLaVi, paper eq. 3).

    Parameters
    ----------
    log_p : array-like of shape (N, K) or (H, N, K)
        Log-probabilities (or any scores: a per-row constant does not change the result) of
        N samples over K clusters, for one or H heads. torch tensor (CPU or CUDA) or numpy
        array, floating dtype. Never modified.
    lam : float, default 20
        Inverse entropic regularisation λ (paper: 20). Larger is sharper and slower.
    prior : None, {"uniform", "gaussian", "zipf"} or array-like of shape (K,) or (H, K)
        Cluster marginal ``r``. Strings use :func:`make_prior` defaults (Gaussian with seed 0);
        call :func:`make_prior` yourself for other settings.
    permute_prior : bool, default True
        Sort a non-uniform prior to the clusters (paper eq. 4): the cluster with the largest
        current mass gets the largest prior mass.
    tol : float, default 1e-3
        Stop when the relative L1 column-marginal error is at most ``tol`` (for every head).
    max_iter : int, default 1000
        Cap on passes over the data; a :class:`ConvergenceWarning` is issued if reached.
    warm_start : SinkhornResult or Tensor of shape (K,) or (H, K), optional
        Column potentials (``result.log_v``) of a previous solve, e.g. the last clustering.
    return_plan : bool, default False
        Also return the (N, K) plan. It reuses the solver's buffer: no extra memory.
    overrelax : float in (0, 2), default 1.0
        Relaxation factor ω of the column update (1 = plain Sinkhorn step).
    anderson : int, default 5
        Memory of the Anderson acceleration of the column potentials (0 = plain Sinkhorn).
        It is K-dimensional work only; it cuts passes over the data several-fold, most at large
        ``lam``. The memory restarts whenever the error grows by more than 2x.
    dtype : torch.float32 or torch.float64
        Precision of the kernel (the N x K buffer); reductions are float64.
    backend : {"auto", "numba", "torch"}
        "auto": fused numba kernel on CPU, torch ops on CUDA.
    process_group : torch.distributed ProcessGroup, optional
        When given, ``log_p`` is this rank's shard of the samples; column sums are all-reduced
        every iteration (no rank gathers N x K) and the result holds this rank's labels.

    Returns
    -------
    SinkhornResult

    Examples
    --------
    >>> import torch
    >>> from otcluster import sinkhorn
    >>> log_p = torch.randn(1000, 10).log_softmax(1)
    >>> res = sinkhorn(log_p, lam=20.0)
    >>> res.labels.shape, bool(res.converged)
    (torch.Size([1000]), True)
    >>> torch.bincount(res.labels, minlength=10).min().item() > 50
    True
    """
    lam = check_lam(lam)
    _check_common(tol, max_iter, overrelax, anderson)
    x = as_float_tensor(log_p, "log_p")
    batched = x.dim() == 3
    x3 = x if batched else x.unsqueeze(0)
    H, N, K = x3.shape
    _check_sizes(N, K, "log_p")
    if K > N and process_group is None:
        raise ValueError(f"K={K} clusters is more than N={N} samples")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    pr, uniform = _resolve_prior(prior, K, H, batched)
    g0 = _resolve_warm(warm_start, H, K)

    use_numba = x3.device.type == "cpu" and _ops.have_numba() and backend != "torch"
    if backend == "numba" and not use_numba:
        raise ValueError("backend='numba' needs a CPU tensor and numba installed")
    if use_numba:
        if x3.dtype not in (torch.float32, torch.float64):
            x3 = x3.float()
        ops = _ops.DenseNumba(x3.contiguous(), lam, dtype)
    else:
        ops = _ops.DenseTorch(x3, lam, dtype)
    return _solve(ops, pr, uniform, permute=permute_prior, tol=tol, max_iter=max_iter,
                  overrelax=overrelax, anderson=int(anderson), g0=g0, group=process_group,
                  device=x3.device, return_plan=return_plan, batched=batched)


def sinkhorn_features(
    features: Any,
    weight: Any,
    bias: Any = None,
    *,
    lam: float = 20.0,
    prior: Any = None,
    permute_prior: bool = True,
    tol: float = 1e-3,
    max_iter: int = 1000,
    warm_start: Any = None,
    overrelax: float = 1.0,
    anderson: int = 5,
    block_rows: int = 8192,
    dtype: torch.dtype = torch.float32,
    process_group: Any = None,
) -> SinkhornResult:
    """Memory-bounded Sinkhorn from features and a linear head: never holds N x K.

    Equivalent to ``sinkhorn(log_softmax(features @ weight.T + bias), ...)`` but recomputes
    blocks of ``block_rows`` logits every iteration, so memory is ``O(N·D + block_rows·K·H)``.

    Parameters
    ----------
    features : Tensor of shape (N, D)
    weight : Tensor of shape (K, D) or (H, K, D)
        The last linear layer of each head.
    bias : Tensor of shape (K,) or (H, K), optional
    block_rows : int, default 8192
        Rows of logits computed at once.
    Other parameters as in :func:`sinkhorn` (``return_plan`` is not available).

    Returns
    -------
    SinkhornResult
        ``plan`` is None.
    """
    lam = check_lam(lam)
    _check_common(tol, max_iter, overrelax, anderson)
    f = as_float_tensor(features, "features", ndims=(2,))
    w = as_float_tensor(weight, "weight", ndims=(2, 3))
    batched = w.dim() == 3
    w3 = w if batched else w.unsqueeze(0)
    H, K, D = w3.shape
    if f.shape[1] != D:
        raise ValueError(f"features have D={f.shape[1]} columns but weight expects D={D}")
    b3 = None
    if bias is not None:
        b = as_float_tensor(bias, "bias", ndims=(1, 2))
        b3 = b if b.dim() == 2 else b.unsqueeze(0)
        if tuple(b3.shape) != (H, K):
            raise ValueError(f"bias has shape {tuple(b.shape)}, expected ({K},) or ({H}, {K})")
    N = f.shape[0]
    _check_sizes(N, K, "features")
    if K > N and process_group is None:
        raise ValueError(f"K={K} clusters is more than N={N} samples")
    if int(block_rows) < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    for t, name in ((f, "features"), (w3, "weight"), (b3, "bias")):
        if t is not None:
            _check_finite_blocks(t, name, int(block_rows))
    pr, uniform = _resolve_prior(prior, K, H, batched)
    g0 = _resolve_warm(warm_start, H, K)
    dev = f.device
    ops = _ops.FromFeatures(f, w3.to(dev), None if b3 is None else b3.to(dev), lam, dtype, block_rows)
    return _solve(ops, pr, uniform, permute=permute_prior, tol=tol, max_iter=max_iter,
                  overrelax=overrelax, anderson=int(anderson), g0=g0, group=process_group,
                  device=dev, return_plan=False, batched=batched)
