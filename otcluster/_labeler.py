"""`SinkhornLabeler`: a thin stateful wrapper over :func:`otcluster.sinkhorn`.

Holds the hyper-parameters, the fixed per-head prior (a Gaussian prior is drawn once, as in
the paper), and the last solution for warm starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._priors import PRIOR_KINDS, make_prior, validate_prior
from ._sinkhorn import SinkhornResult, sinkhorn
from ._validation import as_float_tensor

__all__ = ["SinkhornLabeler", "decorrelated_head_groups", "average_views"]


def average_views(views: Any, *, normalize: bool = True) -> torch.Tensor:
    """Average several views of the same samples in log space (paper eq. 6).

    Parameters
    ----------
    views : array-like of shape (N, K) or (H, N, K), or a list / dict of such arrays
        Log-probabilities (or logits, with ``normalize=True``) of the same N samples, e.g.
        the audio and the video heads.
    normalize : bool, default True
        Apply ``log_softmax`` over clusters to each view first, so logits and log-probabilities
        are both accepted (it leaves log-probabilities unchanged).

    Returns
    -------
    Tensor of shape (N, K) or (H, N, K)
        ``mean_views log_softmax(view)``; a single array is returned (normalised) as is.
    """
    if isinstance(views, Mapping):
        items = list(views.items())
    elif isinstance(views, Sequence) and not isinstance(views, (str, bytes)) and len(views) > 0 \
            and not isinstance(views[0], (int, float)):
        items = [(f"views[{i}]", v) for i, v in enumerate(views)]
    else:
        items = [("log_p", views)]
    if len(items) == 0:
        raise ValueError("no views given")
    tensors = [(name, as_float_tensor(v, name)) for name, v in items]
    shape0 = tuple(tensors[0][1].shape)
    for name, t in tensors[1:]:
        if tuple(t.shape) != shape0:
            raise ValueError(
                f"all views must have the same shape (same N samples, K clusters, heads); "
                f"{tensors[0][0]} is {shape0} but {name} is {tuple(t.shape)}"
            )
    if len(tensors) == 1 and not normalize:
        return tensors[0][1]
    # one N x K buffer in all: the first view's log_softmax (a new tensor) accumulates the others
    out = None
    for _, t in tensors:
        t = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
        if normalize:
            t = torch.log_softmax(t, dim=-1)
        if out is None:
            out = t if normalize else t.clone()  # never write into the caller's tensor
        else:
            out.add_(t.to(out.device, out.dtype))
    return out.div_(len(tensors)) if len(tensors) > 1 else out


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
    permute_prior : bool, default True
        Sort the prior onto the clusters by current mass (paper eq. 4).
    tol, max_iter, overrelax, anderson, dtype
        Passed to :func:`otcluster.sinkhorn`.
    warm_start : bool, default True
        Start each fit from the previous fit's potentials (when K and heads match).
    sigma : float, default 0.1
        Relative spread of the Gaussian prior.
    zipf_exponent : float, default 1.0
    random_state : int, optional
        Seed of the Gaussian prior.
    process_group : torch.distributed ProcessGroup, optional
        Inputs are this rank's shard of the samples (see :func:`otcluster.sinkhorn`).

    Attributes
    ----------
    labels_ : LongTensor of shape (N,) or (n_heads, N)
    result_ : SinkhornResult
    prior_ : Tensor of shape (K,) or (n_heads, K)
        The prior before permutation sorting (``result_.prior`` is after).
    n_iter_ : int

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

    def __init__(
        self,
        n_clusters: int,
        *,
        prior: Any = "uniform",
        lam: float = 20.0,
        n_heads: int = 1,
        permute_prior: bool = True,
        tol: float = 1e-3,
        max_iter: int = 1000,
        overrelax: float = 1.0,
        anderson: int = 5,
        dtype: torch.dtype = torch.float32,
        warm_start: bool = True,
        sigma: float = 0.1,
        zipf_exponent: float = 1.0,
        random_state: int | None = None,
        process_group: Any = None,
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

    # -- internals -----------------------------------------------------------------------
    def _fixed_prior(self) -> torch.Tensor:
        if getattr(self, "prior_", None) is not None:
            return self.prior_
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
        self.prior_ = p if H > 1 else p[0]
        return self.prior_

    def _check_shape(self, x: torch.Tensor) -> None:
        K, H = int(self.n_clusters), int(self.n_heads)
        want = (K,) if x.dim() == 2 else (H, K)
        got = (x.shape[-1],) if x.dim() == 2 else (x.shape[0], x.shape[-1])
        if x.dim() == 2 and H != 1:
            raise ValueError(f"n_heads={H} expects input of shape ({H}, N, {K}), got {tuple(x.shape)}")
        if got != want:
            raise ValueError(f"expected input of shape (N, {K}) or ({H}, N, {K}), got {tuple(x.shape)}")

    # -- public API ----------------------------------------------------------------------
    def fit(self, log_p: Any, y: Any = None) -> SinkhornLabeler:
        """Assign labels to N samples.

        Parameters
        ----------
        log_p : array-like of shape (N, K) or (n_heads, N, K), or a list / dict of such views
            Log-probabilities or logits; several views of the same samples (modalities,
            augmentations) are averaged in log space (paper eq. 6).
        y : ignored

        Returns
        -------
        self
        """
        x = average_views(log_p, normalize=True)
        self._check_shape(x)
        prior = self._fixed_prior()
        warm = None
        last = getattr(self, "result_", None)
        if self.warm_start and last is not None and last.log_v.numel() == prior.numel():
            # the same heads and K; (K,) and (1, K) are both one head: match the input's layout
            warm = last.log_v.reshape(x.shape[0], -1) if x.dim() == 3 else last.log_v.reshape(-1)
        res = sinkhorn(
            x, lam=self.lam, prior=prior, permute_prior=self.permute_prior, tol=self.tol,
            max_iter=self.max_iter, warm_start=warm, overrelax=self.overrelax, anderson=self.anderson,
            dtype=self.dtype,
            process_group=self.process_group,
        )
        self.result_: SinkhornResult = res
        self.labels_ = res.labels
        self.n_iter_ = res.n_iter
        return self

    def fit_predict(self, log_p: Any, y: Any = None) -> torch.Tensor:
        """``fit(log_p).labels_``."""
        return self.fit(log_p).labels_

    def reset(self) -> SinkhornLabeler:
        """Forget the warm start (the drawn prior is kept)."""
        self.result_ = None
        return self

    def state_dict(self) -> dict:
        """Tensors needed to resume: the fixed prior and the last potentials."""
        last = getattr(self, "result_", None)
        return {
            "prior": getattr(self, "prior_", None),
            "log_v": None if last is None else last.log_v,
        }

    def load_state_dict(self, state: dict) -> SinkhornLabeler:
        self.prior_ = state.get("prior")
        log_v = state.get("log_v")
        if log_v is None:
            self.result_ = None  # no warm start saved: never keep this object's previous one
        else:
            z = torch.zeros(())
            self.result_ = SinkhornResult(z, None, 0, z.bool(), z, z, log_v, self.prior_)
        return self

    def __repr__(self) -> str:
        return (f"SinkhornLabeler(n_clusters={self.n_clusters}, prior={self.prior!r}, lam={self.lam}, "
                f"n_heads={self.n_heads})")
