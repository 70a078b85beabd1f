"""The solver's one result type and its warning."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["ConvergenceWarning", "SinkhornResult"]


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
