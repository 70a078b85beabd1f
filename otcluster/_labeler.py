"""`SinkhornLabeler`: the stateful owner of prior resolution, eq. 6 averaging and retries.

Holds the hyper-parameters, the fixed per-head prior (a Gaussian prior is drawn once, as in
the paper), and the last potentials of each head for warm starts; every solve goes through
the solver's retry ladder (:func:`otcluster._solver.robust_solve`).
"""

from __future__ import annotations

from typing import Any

import torch

from ._solver import (
    PRIOR_KINDS,
    SinkhornResult,
    make_prior,
    robust_solve,
    sinkhorn,
    sinkhorn_features,
    validate_prior,
)
from ._solver._retry import finite_rows
from ._validation import as_float_tensor
from ._views import _view_items, average_views

__all__ = ["SinkhornLabeler", "decorrelated_head_groups", "average_views"]


def decorrelated_head_groups(
    n_heads: int, n_groups: int = 2, *, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Split heads at random into groups that each see a different augmentation (paper §3.3).

    Call it at every clustering: the head order is reshuffled each time.

    Parameters
    ----------
    n_heads : int
    n_groups : int, default 2
        Number of augmentation passes; heads are dealt into groups of (nearly) equal size.
    generator : torch.Generator, optional
        Source of randomness (seed it for reproducibility).

    Returns
    -------
    list of LongTensor
        ``groups[g]`` holds the indices of the heads whose log-probabilities come from
        augmentation pass ``g``; together they cover every head once.

    Examples
    --------
    >>> groups = decorrelated_head_groups(10, 2, generator=torch.Generator().manual_seed(0))
    >>> sorted(torch.cat(groups).tolist()) == list(range(10)), [len(g) for g in groups]
    (True, [5, 5])
    """
    if int(n_heads) != n_heads or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads}")
    if int(n_groups) != n_groups or not 1 <= n_groups <= n_heads:
        raise ValueError(f"n_groups must be an integer in [1, n_heads={n_heads}], got {n_groups}")
    perm = torch.randperm(int(n_heads), generator=generator)
    return [g.sort().values for g in torch.tensor_split(perm, int(n_groups))]


class SinkhornLabeler:
    """Turn network outputs into prior-shaped pseudo-labels by optimal transport.

    The one owner of the cluster prior, of the averaging of views (paper eq. 6) and of the
    solver's retry ladder: callers pass their outputs and read ``labels_``.

    Parameters
    ----------
    n_clusters : int
        K.
    prior : {"uniform", "gaussian", "zipf"} or array-like of shape (K,) or (n_heads, K)
        Cluster-size prior. A Gaussian prior is drawn once per head (seeded by
        ``random_state``) and kept for every later call.
    lam : float, default 20
        λ of the entropic problem.
    n_heads : int, default 1
        Number of heads; inputs then have shape (n_heads, N, K).
    permute_prior : bool or None, default None
        Sort the prior onto the clusters by current mass (paper eq. 4) at every fit. None
        ("auto"): a named prior is sorted, an explicit vector keeps its order (its k-th entry
        is cluster k's share). True / False force it.
    tol, max_iter, overrelax, anderson
        Passed to :func:`otcluster.sinkhorn`.
    dtype : {"auto", "float32", "float64"} or torch.float32 / torch.float64, default "auto"
        Kernel precision. "auto": float32, and a failed solve (relative column error above
        0.05, or not finite) is redone in float64, then in float64 without Anderson
        acceleration; only the accepted attempt's warnings are shown. A dtype: one attempt.
    warm_start : bool, default True
        Start each fit from the previous fit's potentials of the same heads.
    sigma : float, default 0.1
        Relative spread of the Gaussian prior.
    zipf_exponent : float, default 1.0
    random_state : int, optional
        Seed of the Gaussian prior.
    process_group : torch.distributed ProcessGroup, optional
        Inputs are this rank's shard of the samples (see :func:`otcluster.sinkhorn`).
    backend : {"auto", "numba", "torch", "triton"}, default "auto"
        Back-end of the dense solve (see :func:`otcluster.sinkhorn`).
    tau : float >= 0 or None, default None
        Semi-relaxed cluster marginals: penalty ``tau * KL(Q^T 1 || prior)`` instead of the
        hard column constraint (see :func:`otcluster.sinkhorn`). None: balanced.
    scaling_stages : int, default 0
        λ-scaling of every solve (see :func:`otcluster.sinkhorn`): 0 solves at ``lam`` only.

    Attributes
    ----------
    labels_ : LongTensor of shape (N,) or (h, N)
        Labels of the last fit: (N,) for 2-D input without ``heads``, else one row per head.
    result_ : SinkhornResult
        The accepted solve of the last fit.
    prior_ : Tensor of shape (K,) or (n_heads, K)
        The prior before permutation sorting (``result_.prior`` is after).
    n_iter_ : int
        Passes over the data of the last fit, all attempts together.
    n_retries_ : int
        Solves redone by the retry ladder, over all fits.

    Examples
    --------
    >>> import torch
    >>> from otcluster import SinkhornLabeler
    >>> audio = torch.randn(500, 5).log_softmax(1)
    >>> video = torch.randn(500, 5).log_softmax(1)
    >>> lab = SinkhornLabeler(5).fit({"audio": audio, "video": video})
    >>> lab.labels_.shape, int(torch.bincount(lab.labels_).min()) >= 90
    (torch.Size([500]), True)
    """

    # learned state (set by fit / load_state_dict, never by callers)
    result_: SinkhornResult | None
    prior_: torch.Tensor | None
    _log_v: torch.Tensor | None

    def __init__(
        self,
        n_clusters: int,
        *,
        prior: Any = "uniform",
        lam: float = 20.0,
        n_heads: int = 1,
        permute_prior: bool | None = None,
        tol: float = 1e-3,
        max_iter: int = 1000,
        overrelax: float = 1.0,
        anderson: int = 5,
        dtype: Any = "auto",
        warm_start: bool = True,
        sigma: float = 0.1,
        zipf_exponent: float = 1.0,
        random_state: int | None = None,
        process_group: Any = None,
        backend: str = "auto",
        tau: float | None = None,
        scaling_stages: int = 0,
    ):
        self.n_clusters = n_clusters
        self.prior = prior
        self.lam = lam
        self.n_heads = n_heads
        self.permute_prior = permute_prior
        self.tol = tol
        self.max_iter = max_iter
        self.overrelax = overrelax
        self.anderson = anderson
        self.dtype = dtype
        self.warm_start = warm_start
        self.sigma = sigma
        self.zipf_exponent = zipf_exponent
        self.random_state = random_state
        self.process_group = process_group
        self.backend = backend
        self.tau = tau
        self.scaling_stages = scaling_stages

    # -- internals -----------------------------------------------------------------------
    def _fixed_prior(self) -> torch.Tensor:
        """``prior_``, resolved (drawn, validated) on first use and kept."""
        fixed: torch.Tensor | None = getattr(self, "prior_", None)
        if fixed is not None:
            return fixed
        K, H = int(self.n_clusters), int(self.n_heads)
        if K < 2:
            raise ValueError(f"n_clusters must be >= 2, got {self.n_clusters}")
        if H < 1:
            raise ValueError(f"n_heads must be >= 1, got {self.n_heads}")
        if isinstance(self.prior, str):
            if self.prior not in PRIOR_KINDS:
                raise ValueError(f"prior must be one of {PRIOR_KINDS} or a vector, got {self.prior!r}")
            seed = 0 if self.random_state is None else self.random_state
            p = make_prior(self.prior, K, n_heads=H, sigma=self.sigma,
                           exponent=self.zipf_exponent, seed=seed)
        else:
            p = validate_prior(self.prior, K, H)
            if p.dim() == 1:
                p = p.expand(H, K).clone()
        fixed = p if H > 1 else p[0]
        self.prior_ = fixed
        return fixed

    def _permute(self) -> bool:
        if self.permute_prior is None:  # "auto": sort a named prior, keep a vector's order
            return isinstance(self.prior, str)
        return bool(self.permute_prior)

    def _rows(self, heads: Any, n_in: int | None, shape: tuple[int, ...]) -> list[int]:
        """Head indices the input holds (``n_in`` of them; None for 2-D input)."""
        K, H = int(self.n_clusters), int(self.n_heads)
        if heads is None:
            if n_in is None and H != 1:
                raise ValueError(f"n_heads={H} expects input of shape ({H}, N, {K}), got {shape}")
            if n_in is not None and n_in != H:
                raise ValueError(f"expected input of shape (N, {K}) or ({H}, N, {K}), got {shape}")
            return list(range(H))
        rows = [int(h) for h in heads]
        if not rows or len(set(rows)) != len(rows) or min(rows) < 0 or max(rows) >= H:
            raise ValueError(f"heads must be distinct head indices in 0..{H - 1}, got {list(heads)}")
        if (n_in or 1) != len(rows):
            raise ValueError(f"heads={rows} expects input for {len(rows)} heads, got shape {shape}")
        return rows

    def _check_n(self, N: int) -> None:
        K = int(self.n_clusters)
        if K > N and self.process_group is None:
            raise ValueError(
                f"K={K} clusters is more than N={N} samples: hard labels need N >= K. Use "
                "otcluster.sinkhorn_codes for soft codes (K > N allowed), or a larger batch")

    def _setup(self, rows: list[int], batched: bool) -> dict[str, Any]:
        """Keyword arguments of the solve shared by ``fit`` and ``fit_features``."""
        K = int(self.n_clusters)
        prior = self._fixed_prior().reshape(-1, K)[rows]
        log_v = getattr(self, "_log_v", None)
        warm = log_v[rows] if self.warm_start and log_v is not None else None
        if not batched:  # one head given as 2-D input: the solver takes (K,) vectors
            prior, warm = prior[0], None if warm is None else warm[0]
        return dict(lam=self.lam, prior=prior, permute_prior=self._permute(), tol=self.tol,
                    max_iter=self.max_iter, warm_start=warm, overrelax=self.overrelax,
                    process_group=self.process_group, tau=self.tau,
                    scaling_stages=self.scaling_stages)

    def _solve(self, run: Any, rows: list[int], one_row: bool) -> SinkhornLabeler:
        """``run(dtype, anderson)`` through the retry ladder; keep the accepted result."""

        def attempt(dtype: torch.dtype, anderson: int | None) -> SinkhornResult:
            return run(dtype, self.anderson if anderson is None else anderson)

        res, n_iter, retries = robust_solve(attempt, self.dtype)
        K = int(self.n_clusters)
        if getattr(self, "_log_v", None) is None:
            self._log_v = torch.zeros((int(self.n_heads), K), dtype=torch.float64)
        assert self._log_v is not None
        # never warm-start from NaN potentials: a non-finite head starts cold next time
        self._log_v[rows] = finite_rows(res.log_v.detach().reshape(len(rows), K).cpu())
        self.result_ = res
        self.labels_ = res.labels if one_row else res.labels.reshape(len(rows), -1)
        self.n_iter_ = n_iter
        self.n_retries_ = getattr(self, "n_retries_", 0) + retries
        return self

    # -- public API ----------------------------------------------------------------------
    def fit(self, log_p: Any, y: Any = None, *, heads: Any = None) -> SinkhornLabeler:
        """Assign labels to N samples.

        Parameters
        ----------
        log_p : array-like of shape (N, K) or (h, N, K), or a list / dict of such views
            Log-probabilities or logits (a per-row constant does not change the labels).
            Several views of the same samples (modalities, augmentations) are averaged in log
            space (paper eq. 6, :func:`average_views`); one array is used as is, without a
            copy. May require grad: labels are computed without gradients.
        y : ignored
        heads : list of int, optional
            The heads the input holds (h = len(heads)): their prior and warm-start rows are
            used and only their potentials are updated. ``labels_`` is then (h, N).

        Returns
        -------
        self
        """
        with torch.no_grad():
            items = _view_items(log_p)
            if len(items) == 1:  # one array: no log_softmax copy (per-row constants do not matter)
                x = as_float_tensor(items[0][1], items[0][0])
            else:
                x = average_views(log_p, normalize=True)
            batched = x.dim() == 3
            rows = self._rows(heads, x.shape[0] if batched else None, tuple(x.shape))
            if x.shape[-1] != int(self.n_clusters):
                H, K = int(self.n_heads), int(self.n_clusters)
                raise ValueError(f"expected input of shape (N, {K}) or ({H}, N, {K}), "
                                 f"got {tuple(x.shape)}")
            kw = self._setup(rows, batched)
            self._check_n(x.shape[-2])

            def run(dtype: torch.dtype, anderson: int) -> SinkhornResult:
                return sinkhorn(x, anderson=anderson, dtype=dtype, backend=self.backend, **kw)

            return self._solve(run, rows, one_row=heads is None and not batched)

    def fit_features(self, features: Any, weight: Any, bias: Any = None, *, heads: Any = None,
                     block_rows: int = 8192) -> SinkhornLabeler:
        """Assign labels from features and linear heads without holding N x K (memory-bounded).

        The labels of ``fit(log_softmax(features @ weight.T + bias))``, computed by
        :func:`otcluster.sinkhorn_features`, through the same prior, warm start and retries.

        Parameters
        ----------
        features : Tensor of shape (N, D)
            This rank's shard of the samples.
        weight : Tensor of shape (h, K, D) or (K, D)
            The last linear layer of each head given.
        bias : Tensor of shape (h, K) or (K,), optional
        heads : list of int, optional
            The heads ``weight`` holds (as in :meth:`fit`); ``labels_`` is then (h, N).
        block_rows : int, default 8192
            Rows of logits computed at once.

        Returns
        -------
        self
        """
        with torch.no_grad():
            f = as_float_tensor(features, "features", ndims=(2,))
            w = as_float_tensor(weight, "weight", ndims=(2, 3))
            batched = w.dim() == 3
            rows = self._rows(heads, w.shape[0] if batched else None, tuple(w.shape))
            if w.shape[-2] != int(self.n_clusters):
                raise ValueError(f"weight has K={w.shape[-2]} rows per head, expected "
                                 f"n_clusters={self.n_clusters}")
            kw = self._setup(rows, batched)
            self._check_n(f.shape[0])

            def run(dtype: torch.dtype, anderson: int) -> SinkhornResult:
                return sinkhorn_features(f, w, bias, anderson=anderson, dtype=dtype,
                                         block_rows=block_rows, **kw)

            return self._solve(run, rows, one_row=heads is None and not batched)

    def fit_predict(self, log_p: Any, y: Any = None, *, heads: Any = None) -> torch.Tensor:
        """``fit(log_p, heads=heads).labels_``."""
        return self.fit(log_p, heads=heads).labels_

    def reset(self) -> SinkhornLabeler:
        """Forget the warm start (the drawn prior is kept)."""
        self.result_ = None
        self._log_v = None
        return self

    def state_dict(self) -> dict:
        """Tensors needed to resume: the fixed prior and the last potentials of each head.

        ``{"prior": prior_, "log_v": (H, K) or (K,) float64, or None before any fit}``.
        """
        log_v = getattr(self, "_log_v", None)
        if log_v is not None and int(self.n_heads) == 1:
            log_v = log_v[0]
        return {"prior": getattr(self, "prior_", None), "log_v": log_v}

    def load_state_dict(self, state: dict) -> SinkhornLabeler:
        """Restore :meth:`state_dict` (also what older versions stored: the same keys)."""
        H, K = int(self.n_heads), int(self.n_clusters)
        prior = state.get("prior")
        if prior is not None:
            prior = torch.as_tensor(prior, dtype=torch.float64)
            if prior.numel() != H * K:
                raise ValueError(f"state prior has shape {tuple(prior.shape)}, expected "
                                 f"({H}, {K}) or ({K},) for n_heads={H}")
            prior = prior.reshape(H, K) if H > 1 else prior.reshape(K)
        self.prior_ = prior
        log_v = state.get("log_v")
        if log_v is None:
            self._log_v = None  # no warm start saved: never keep this object's previous one
        else:
            log_v = torch.as_tensor(log_v).detach().to("cpu", torch.float64)
            if log_v.numel() != H * K:
                raise ValueError(f"state log_v has shape {tuple(log_v.shape)}, expected "
                                 f"({H}, {K}) or ({K},) for n_heads={H}")
            self._log_v = finite_rows(log_v.reshape(H, K).clone())
        return self

    def __repr__(self) -> str:
        return (f"SinkhornLabeler(n_clusters={self.n_clusters}, prior={self.prior!r}, lam={self.lam}, "
                f"n_heads={self.n_heads})")
