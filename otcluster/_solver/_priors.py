"""Cluster priors (the column marginal ``r`` of the transport problem) and their sorting.

Paper §3.2: the prior is known only up to a permutation of the clusters; eq. (4)-(5)
show the optimal permutation gives the largest prior mass to the cluster with the
largest current mass (rearrangement inequality).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["make_prior", "validate_prior", "sort_prior", "PRIOR_KINDS"]

PRIOR_KINDS = ("uniform", "gaussian", "zipf")


def make_prior(
    kind: str,
    n_clusters: int,
    *,
    n_heads: int | None = None,
    sigma: float = 0.1,
    exponent: float = 1.0,
    seed: int | None = None,
) -> torch.Tensor:
    """Build a cluster prior.

    Parameters
    ----------
    kind : {"uniform", "gaussian", "zipf"}
        ``"uniform"``: ``1/K``. ``"gaussian"``: cluster sizes ``N(1, sigma) * N/K``
        (clipped at 0.05 to stay positive), normalised, as in the paper; drawn independently
        per head. ``"zipf"``: ``p_k ∝ k ** -exponent``, largest first.
    n_clusters : int
        K, the number of clusters (>= 2).
    n_heads : int, optional
        When given, return one prior per head, shape (n_heads, K).
    sigma : float, default 0.1
        Relative standard deviation of the Gaussian prior.
    exponent : float, default 1.0
        Zipf exponent ``s``.
    seed : int, optional
        Seed of the Gaussian draw (a private generator: global RNG state is untouched).

    Returns
    -------
    prior : Tensor of shape (K,) or (n_heads, K), float64
        Non-negative, each row sums to 1.

    Examples
    --------
    >>> p = make_prior("zipf", 4, exponent=1.0)
    >>> [round(float(x), 3) for x in p]
    [0.48, 0.24, 0.16, 0.12]
    """
    if not isinstance(kind, str) or kind not in PRIOR_KINDS:
        raise ValueError(f"prior kind must be one of {PRIOR_KINDS}, got {kind!r}")
    if int(n_clusters) != n_clusters or n_clusters < 2:
        raise ValueError(f"n_clusters must be an integer >= 2, got {n_clusters}")
    if n_heads is not None and (int(n_heads) != n_heads or n_heads < 1):
        raise ValueError(f"n_heads must be a positive integer, got {n_heads}")
    K = int(n_clusters)
    H = 1 if n_heads is None else int(n_heads)
    if kind == "uniform":
        p = torch.full((H, K), 1.0 / K, dtype=torch.float64)
    elif kind == "zipf":
        if not np.isfinite(exponent) or exponent < 0:
            raise ValueError(f"zipf exponent must be finite and >= 0, got {exponent}")
        w = torch.arange(1, K + 1, dtype=torch.float64) ** (-float(exponent))
        p = (w / w.sum()).expand(H, K).clone()
    else:
        if not np.isfinite(sigma) or sigma < 0:
            raise ValueError(f"gaussian sigma must be finite and >= 0, got {sigma}")
        g = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
        w = (torch.randn(H, K, generator=g, dtype=torch.float64) * sigma + 1.0).clamp_min(0.05)
        p = w / w.sum(1, keepdim=True)
    return p[0] if n_heads is None else p


def validate_prior(prior: Any, n_clusters: int, n_heads: int | None, *, atol: float = 1e-4) -> torch.Tensor:
    """Check a user prior and return it as float64 of shape (K,) or (H, K).

    Raises ``ValueError`` naming the problem: wrong length, non-finite, negative,
    not summing to 1.
    """
    if isinstance(prior, torch.Tensor):
        p = prior.detach().to("cpu", torch.float64)
    else:
        try:
            p = torch.as_tensor(np.asarray(prior, dtype=np.float64))
        except (TypeError, ValueError):
            kind = type(prior).__name__
            raise TypeError(f"prior must be a string or a numeric vector, got {kind}") from None
    if p.dim() == 1:
        if p.numel() != n_clusters:
            raise ValueError(f"prior has length {p.numel()} but there are K={n_clusters} clusters")
    elif p.dim() == 2:
        if p.shape[1] != n_clusters:
            raise ValueError(f"prior has {p.shape[1]} columns but there are K={n_clusters} clusters")
        if n_heads is None or p.shape[0] != n_heads:
            raise ValueError(f"prior of shape {tuple(p.shape)} does not match n_heads={n_heads}")
    else:
        raise ValueError(f"prior must be 1-D (K,) or 2-D (H, K), got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        raise ValueError("prior contains non-finite values")
    if bool((p < 0).any()):
        raise ValueError("prior contains negative values")
    sums = p.sum(-1)
    if bool(((sums - 1).abs() > atol).any()):
        raise ValueError(f"prior must sum to 1 (within {atol}), got sums {sums.tolist()}")
    if bool((p == 0).all(-1).any()):
        raise ValueError("prior is all zeros")
    return p / p.sum(-1, keepdim=True)


def sort_prior(prior: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Permute ``prior`` so that its largest entry goes to the cluster of largest ``mass``.

    Parameters
    ----------
    prior : Tensor of shape (..., K)
    mass : Tensor of shape (..., K)
        Current cluster masses (e.g. column sums of the row-normalised kernel).

    Returns
    -------
    Tensor of shape (..., K)
        ``out[..., argsort(mass)[j]] = sort(prior)[j]``: ranks of ``out`` equal ranks of ``mass``.
    """
    order = torch.argsort(mass.to(prior.device), dim=-1, stable=True)
    sorted_prior = torch.sort(prior, dim=-1, stable=True).values
    out = torch.empty_like(prior)
    out.scatter_(-1, order, sorted_prior)
    return out
