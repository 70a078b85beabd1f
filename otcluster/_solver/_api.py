"""Public entry points of the solver: :func:`sinkhorn` (dense) and :func:`sinkhorn_features`
(memory-bounded). Each validates its data, packs the options into one :class:`SolverOptions`
(validated once), picks a back-end and runs the shared iteration.
"""

from __future__ import annotations

from typing import Any

import torch

from .._typing import ArrayLike
from .._validation import as_float_tensor, check_finite_blocks
from . import _ops
from ._iterate import solve
from ._options import SolverOptions, check_sizes
from ._result import SinkhornResult

__all__ = ["BACKENDS", "sinkhorn", "sinkhorn_features"]

BACKENDS = ("auto", "numba", "torch", "triton")


def sinkhorn(
    log_p: ArrayLike,
    *,
    lam: float = 20.0,
    prior: Any = None,
    permute_prior: bool | None = None,
    tol: float = 1e-3,
    max_iter: int = 1000,
    warm_start: Any = None,
    return_plan: bool = False,
    overrelax: float = 1.0,
    anderson: int = 5,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    process_group: Any = None,
    tau: float | None = None,
    scaling_stages: int = 0,
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
        call :func:`make_prior` yourself for other settings (a vector: pass
        ``permute_prior=True`` to have it sorted).
    permute_prior : bool or None, default None
        Sort a non-uniform prior to the clusters (paper eq. 4): the cluster with the largest
        current mass gets the largest prior mass. None ("auto"): a named prior ("gaussian",
        "zipf") is sorted; an explicit vector keeps its order (its k-th entry is cluster k's
        share). True / False force it.
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
    backend : {"auto", "numba", "torch", "triton"}
        "auto": the fused numba kernel on CPU; on CUDA, the fused Triton kernel for float32
        (one pass over the N x K matrix: 1.4 reads of it measured on an H200) when Triton is
        installed, else torch ops (two mat-vecs: 4.4 reads there). "torch": torch ops on any
        device. "triton": the Triton kernel for float32 solves (float64 ones, e.g. a retry's,
        use torch ops), or an error where it cannot run (a CPU tensor, no Triton).
    process_group : torch.distributed ProcessGroup, optional
        When given, ``log_p`` is this rank's shard of the samples; column sums are all-reduced
        every iteration (no rank gathers N x K) and the result holds this rank's labels.
    tau : float >= 0 or None, default None
        Semi-relaxed cluster marginals: the column constraint ``Q^T 1 = prior`` becomes the
        penalty ``tau * KL(Q^T 1 || prior)``; rows stay hard (``1/N`` each). None or inf:
        balanced (the paper); 0: no column constraint (the row-wise softmax of ``lam * log_p``).
        The problem of POT's ``ot.unbalanced.sinkhorn_unbalanced(a=1/N, b=prior, M=-log_p,
        reg=1/lam, reg_m=(inf, tau), reg_type="entropy")`` and of ott-jax with ``tau_a=1``,
        ``tau_b = tau / (tau + 1/lam)``. ``error`` is then the relative L1 gap between the
        column masses and those the next column update aims at (0 at the fixed point).
    scaling_stages : int, default 0
        λ-scaling (ε-scaling): solve first at ``lam / 2**scaling_stages``, then at twice that,
        and so on up to ``lam``, each stage run to ``tol`` and started from the previous
        stage's potentials (scaled with λ). The same problem and solution (a prior to be sorted
        is sorted at ``lam``, as without stages); far fewer passes where the plan is nearly a
        hard assignment (a confident network at ``lam=20``: ``docs/benchmarks/scaling.md``).
        ``max_iter`` caps the passes of all stages together (each stage before the last gets
        at most its share of the passes left); ``n_iter`` counts them all. On an easy problem
        (a few passes at ``lam``) the stages cost passes.

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
    opts = SolverOptions(lam=lam, prior=prior, permute_prior=permute_prior, tol=tol,
                         max_iter=max_iter, warm_start=warm_start, overrelax=overrelax,
                         anderson=anderson, dtype=dtype, process_group=process_group, tau=tau,
                         scaling_stages=scaling_stages)
    x = as_float_tensor(log_p, "log_p")
    batched = x.dim() == 3
    x3 = x if batched else x.unsqueeze(0)
    H, N, K = x3.shape
    check_sizes(N, K, "log_p", process_group)
    problem = opts.problem(H, K, batched)
    with torch.no_grad():
        ops = _dense_ops(x3, opts, backend)
        return solve(ops, problem, opts, device=x3.device, return_plan=return_plan)


def _dense_ops(x3: torch.Tensor, opts: SolverOptions, backend: str
               ) -> _ops.DenseNumba | _ops.DenseTorch:
    """The dense back-end ``backend`` names for ``x3`` (H, N, K) (see :func:`sinkhorn`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    use_numba = x3.device.type == "cpu" and backend in ("auto", "numba") and _ops.have_numba()
    if backend == "numba" and not use_numba:
        raise ValueError("backend='numba' needs a CPU tensor and numba installed")
    kernel = None if backend in ("numba", "torch") else \
        _ops.triton_kernel(x3.device, asked=backend == "triton")
    if backend == "triton" and kernel is None:
        raise ValueError(f"backend='triton' needs a CUDA tensor and the triton package (got a "
                         f"{x3.device.type} tensor)")
    if use_numba and kernel is None:
        if x3.dtype not in (torch.float32, torch.float64):
            x3 = x3.float()
        return _ops.DenseNumba(x3.contiguous(), opts.lam, opts.dtype)
    kernel = kernel if opts.dtype == torch.float32 else None  # the kernel is float32 only
    return _ops.DenseTorch(x3, opts.lam, opts.dtype, kernel)


def sinkhorn_features(
    features: ArrayLike,
    weight: ArrayLike,
    bias: Any = None,
    *,
    lam: float = 20.0,
    prior: Any = None,
    permute_prior: bool | None = None,
    tol: float = 1e-3,
    max_iter: int = 1000,
    warm_start: Any = None,
    overrelax: float = 1.0,
    anderson: int = 5,
    block_rows: int = 8192,
    dtype: torch.dtype = torch.float32,
    process_group: Any = None,
    tau: float | None = None,
    scaling_stages: int = 0,
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
    opts = SolverOptions(lam=lam, prior=prior, permute_prior=permute_prior, tol=tol,
                         max_iter=max_iter, warm_start=warm_start, overrelax=overrelax,
                         anderson=anderson, dtype=dtype, process_group=process_group, tau=tau,
                         scaling_stages=scaling_stages)
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
    check_sizes(f.shape[0], K, "features", process_group)
    if int(block_rows) < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    for t, name in ((f, "features"), (w3, "weight"), (b3, "bias")):
        if t is not None:
            check_finite_blocks(t, name, int(block_rows))
    problem = opts.problem(H, K, batched)
    dev = f.device
    with torch.no_grad():
        ops = _ops.FromFeatures(f, w3.to(dev), None if b3 is None else b3.to(dev), opts.lam,
                                opts.dtype, block_rows)
        return solve(ops, problem, opts, device=dev, return_plan=False)
