"""otcluster: optimal-transport clustering (Sinkhorn-Knopp self-labelling) with plug-in encoders.

Public names are re-exported here; import from ``otcluster``, not from private modules.
"""

from ._labeler import SinkhornLabeler, average_views, decorrelated_head_groups
from ._priors import make_prior, sort_prior
from ._sinkhorn import ConvergenceWarning, SinkhornResult, sinkhorn, sinkhorn_features

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "SinkhornLabeler",
    "SinkhornResult",
    "average_views",
    "decorrelated_head_groups",
    "make_prior",
    "sinkhorn",
    "sinkhorn_features",
    "sort_prior",
]
