"""The robust retry ladder: float32, then float64, then float64 without acceleration.

A pure function of a ``solve(dtype, anderson)`` callable, so the labeler runs it for the dense
and the memory-bounded solves alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from ._options import DTYPES
from ._result import ConvergenceWarning, SinkhornResult

__all__ = ["ATTEMPTS", "FAILED_ERROR", "failed", "finite_rows", "robust_solve"]

# With dtype "auto" a solve whose relative L1 column error ends above FAILED_ERROR (or not
# finite) is redone with the next of ATTEMPTS (dtype, Anderson memory; None = the caller's
# default). Two failures seen in training (see the trainer's report):
# * float32 underflow: when the network gives several clusters a log-probability a few nats
#   below the row maximum for every sample (collapsed clusters), lam times that gap underflows
#   the float32 kernel, those columns are all zeros and the error ends at 1.2 or NaN with
#   empty clusters; float64 solves it.
# * Anderson acceleration gives NaN for a head that has converged (zero residuals) while another
#   head of the same batch still iterates; plain Sinkhorn (Anderson memory 0) solves it.
FAILED_ERROR = 0.05
ATTEMPTS: tuple[tuple[torch.dtype, int | None], ...] = (
    (torch.float32, None), (torch.float64, None), (torch.float64, 0))


def failed(res: SinkhornResult) -> bool:
    """Whether a solve is to be redone: non-finite or relative column error above FAILED_ERROR."""
    err = res.error
    return not bool(torch.isfinite(err).all()) or float(err.max()) > FAILED_ERROR


def finite_rows(log_v: torch.Tensor) -> torch.Tensor:
    """Potentials (H, K) with non-finite rows replaced by zeros (a cold start for that head)."""
    bad = ~torch.isfinite(log_v).all(-1)
    return torch.where(bad[:, None], torch.zeros_like(log_v), log_v)


def check_dtype(dtype: Any) -> Any:
    """``"auto"``, or the torch dtype named by ``dtype`` (float32 / float64, or their names)."""
    if isinstance(dtype, str) and dtype == "auto":
        return "auto"
    try:
        return DTYPES[dtype]
    except (KeyError, TypeError):
        raise TypeError(f"dtype must be 'auto', 'float32', 'float64', torch.float32 or "
                         f"torch.float64, got {dtype!r}") from None


def _rewarn(caught: list) -> None:
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=4)


def robust_solve(solve: Callable[[torch.dtype, int | None], SinkhornResult], dtype: Any = "auto"
                 ) -> tuple[SinkhornResult, int, int]:
    """Run ``solve(dtype, anderson)``, redone as in ``ATTEMPTS`` while it fails.

    Parameters
    ----------
    solve : callable (dtype, anderson) -> SinkhornResult
        ``anderson=None`` means the caller's own Anderson memory. Each call must start from the
        same state (the ladder may call it up to three times).
    dtype : "auto", torch.float32 or torch.float64 (or their names)
        ``"auto"``: the ladder. A dtype: one attempt in that precision.

    Returns
    -------
    result : SinkhornResult
        The accepted solve (the last one if all failed).
    n_iter : int
        Passes over the data of all attempts together.
    n_retries : int
        Solves redone (0 to 2).

    The :class:`ConvergenceWarning` of a discarded attempt is dropped; the accepted attempt's
    warnings are re-emitted.
    """
    mode = check_dtype(dtype)
    if mode != "auto":
        res = solve(mode, None)
        return res, res.n_iter, 0
    total = 0
    for i, (dt, anderson) in enumerate(ATTEMPTS):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            res = solve(dt, anderson)
        total += res.n_iter
        if not failed(res) or i == len(ATTEMPTS) - 1:
            _rewarn(caught)
            return res, total, i
    raise AssertionError("unreachable")
