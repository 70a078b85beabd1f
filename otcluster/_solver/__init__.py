"""The Sinkhorn solver (private package; public names are re-exported by ``otcluster``).

Module map (what each may import is in ``docs/design.md``):

* ``_api``: the public entry points :func:`sinkhorn` and :func:`sinkhorn_features`;
* ``_options``: :class:`SolverOptions` (validated once) and the problem's prior / warm start;
* ``_iterate``: the Sinkhorn-Knopp iteration on (H, K) potentials;
* ``_anderson``: Anderson acceleration with its trust radius and stall pause;
* ``_retry``: the float32 -> float64 -> plain-Sinkhorn retry ladder (a pure function);
* ``_ops`` / ``_kernels_numba``: the N x K back-ends (numba imported on first use);
* ``_priors``: cluster priors and their sorting (paper eq. 4);
* ``_result``: :class:`SinkhornResult` and :class:`ConvergenceWarning`.

Nothing here imports ``torch.nn``.
"""

from ._api import sinkhorn, sinkhorn_features
from ._options import SolverOptions
from ._priors import PRIOR_KINDS, make_prior, sort_prior, validate_prior
from ._result import ConvergenceWarning, SinkhornResult
from ._retry import robust_solve

__all__ = ["PRIOR_KINDS", "ConvergenceWarning", "SinkhornResult", "SolverOptions", "make_prior",
           "robust_solve", "sinkhorn", "sinkhorn_features", "sort_prior", "validate_prior"]
