"""otcluster: optimal-transport clustering (Sinkhorn-Knopp self-labelling) with plug-in encoders.

Public names are re-exported here; import from ``otcluster``, not from private modules.
Layering: ``otcluster`` depends on torch / numpy / scipy (+ numba for the fused CPU kernels);
scikit-learn and faiss are optional (``OTKMeans``, ``kmeans_baseline``) and imported lazily.
"""

from . import metrics
from ._agreement import head_agreement, select_head, view_agreement
from ._align import (
    AlignResult,
    align,
    align_from_cost,
    alignment_cost_matrix,
    permute_linear,
    permute_linear_,
)
from ._codes import CodesResult, sinkhorn_codes
from ._heads import HeadConfig, MultiHead
from ._kernels import mkl_cnr_mode, portable_kernels
from ._kmeans import KMeansResult, kmeans_baseline
from ._labeler import SinkhornLabeler, average_views, decorrelated_head_groups
from ._merge import MergeResult, merge_clusters, merge_log_probs
from ._metrics import (
    ClusterReport,
    ari_score,
    cluster_report,
    hungarian_accuracy,
    nmi_score,
)
from ._schedule import clustering_steps
from ._solver import (
    ConvergenceWarning,
    SinkhornResult,
    make_prior,
    sinkhorn,
    sinkhorn_features,
    sort_prior,
)
from ._train import SelfLabelModel, SelfLabelTrainer, TrainerConfig
from ._views import confidence_weights

__version__ = "0.1.0"


def __getattr__(name: str):
    # OTKMeans is a scikit-learn estimator: import it (and scikit-learn) only when asked for.
    if name == "OTKMeans":
        from ._otkmeans import OTKMeans

        return OTKMeans
    raise AttributeError(f"module 'otcluster' has no attribute {name!r}")


__all__ = [
    "AlignResult",
    "ClusterReport",
    "CodesResult",
    "ConvergenceWarning",
    "HeadConfig",
    "KMeansResult",
    "MergeResult",
    "MultiHead",
    "OTKMeans",
    "SelfLabelModel",
    "SelfLabelTrainer",
    "SinkhornLabeler",
    "SinkhornResult",
    "TrainerConfig",
    "align",
    "align_from_cost",
    "alignment_cost_matrix",
    "ari_score",
    "average_views",
    "cluster_report",
    "clustering_steps",
    "confidence_weights",
    "decorrelated_head_groups",
    "head_agreement",
    "hungarian_accuracy",
    "kmeans_baseline",
    "make_prior",
    "merge_clusters",
    "merge_log_probs",
    "metrics",
    "mkl_cnr_mode",
    "nmi_score",
    "permute_linear",
    "permute_linear_",
    "portable_kernels",
    "select_head",
    "sinkhorn",
    "sinkhorn_codes",
    "sinkhorn_features",
    "sort_prior",
    "view_agreement",
]
