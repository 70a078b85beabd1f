"""The problem's options, validated once, shared by the dense and the memory-bounded solves.

:class:`SolverOptions` holds what :func:`sinkhorn` and :func:`sinkhorn_features` have in common
(everything but the data and the back-end choice); :meth:`SolverOptions.problem` resolves the
prior and the warm start against the problem's (H, K).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from .._validation import as_tensor, check_lam
from ._priors import make_prior, validate_prior
from ._relaxed import damping
from ._result import SinkhornResult

__all__ = ["DTYPES", "SolverOptions", "Problem", "check_sizes"]

DTYPES = {  # the kernel precisions, by dtype or by name
    "float32": torch.float32, "float64": torch.float64,
    torch.float32: torch.float32, torch.float64: torch.float64,
}


class Problem(NamedTuple):
    """What the iteration needs besides the data: (H, K) prior, start potentials, flags."""

    prior: torch.Tensor  # (H, K) float64
    uniform: bool
    permute: bool
    g0: torch.Tensor | None  # (H, K) float64, centred, or None (cold start)
    batched: bool


@dataclasses.dataclass(frozen=True)
class SolverOptions:
    """Options of one solve (see :func:`otcluster.sinkhorn` for their meaning).

    Constructing one validates every field; private code can then rely on them.
    """

    lam: float = 20.0
    prior: Any = None
    permute_prior: bool | None = None  # None: sort a named prior, keep a vector's order
    tol: float = 1e-3
    max_iter: int = 1000
    warm_start: Any = None
    overrelax: float = 1.0
    anderson: int = 5
    dtype: Any = torch.float32
    process_group: Any = None
    tau: float | None = None
    scaling_stages: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the validated values in place
        set_(self, "lam", check_lam(self.lam))
        tol, max_iter, overrelax, anderson = self.tol, self.max_iter, self.overrelax, self.anderson
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be a positive number, got {tol}")
        if int(max_iter) != max_iter or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
        if not (0.0 < overrelax < 2.0):
            raise ValueError(f"overrelax must be in (0, 2), got {overrelax}")
        if int(anderson) != anderson or anderson < 0:
            raise ValueError(f"anderson must be a non-negative integer, got {anderson}")
        set_(self, "anderson", int(anderson))
        stages = self.scaling_stages
        if isinstance(stages, bool) or not isinstance(stages, (int, np.integer)) or stages < 0:
            raise ValueError(f"scaling_stages must be a non-negative integer, got {stages!r}")
        set_(self, "scaling_stages", int(stages))
        try:
            dtype = DTYPES[self.dtype]
        except (KeyError, TypeError):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {self.dtype}") from None
        set_(self, "dtype", dtype)
        damping(self.tau, self.lam)  # validates tau

    @property
    def phi(self) -> float:
        """Damping of the column update: 1 balanced, ``tau / (tau + 1/lam)`` semi-relaxed."""
        return damping(self.tau, self.lam)

    def problem(self, H: int, K: int, batched: bool) -> Problem:
        """Resolve the prior and the warm start for H heads and K clusters."""
        prior, uniform = _resolve_prior(self.prior, K, H, batched)
        permute = isinstance(self.prior, str) if self.permute_prior is None else self.permute_prior
        return Problem(prior, uniform, bool(permute), _resolve_warm(self.warm_start, H, K), batched)


def check_sizes(N: int, K: int, name: str, process_group: Any) -> None:
    if N == 0:
        raise ValueError(f"{name} has no samples (N=0)")
    if K < 2:
        raise ValueError(f"{name} must have at least K=2 clusters, got K={K}")
    if K > N and process_group is None:
        raise ValueError(f"K={K} clusters is more than N={N} samples: hard labels need N >= K. Use "
                         "otcluster.sinkhorn_codes for soft codes (K > N allowed), or a larger batch")


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
    if not isinstance(g, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"warm_start must be a SinkhornResult or column potentials of shape (K,) "
                        f"or (H, K) (result.log_v), got {type(warm_start).__name__}")
    g = as_tensor(g, "warm_start", ndims=(1, 2), kind="real").to("cpu", torch.float64)
    if g.dim() == 1:
        g = g.expand(H, g.shape[0]) if H > 1 and g.shape[0] == K else g.reshape(1, -1)
    if tuple(g.shape) != (H, K):
        raise ValueError(f"warm_start has shape {tuple(g.shape)}, expected ({K},) or ({H}, {K})")
    if not bool(torch.isfinite(g).all()):
        raise ValueError("warm_start potentials contain non-finite values")
    return g - g.amax(-1, keepdim=True)  # potentials are defined up to a constant per head
