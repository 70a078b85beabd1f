"""Clustering metrics (paper appendix A.4) and unsupervised head selection.

Public alias of :mod:`otcluster._metrics` and :mod:`otcluster._agreement`::

    from otcluster.metrics import cluster_report, nmi_score, select_head, view_agreement
"""

from ._agreement import head_agreement, select_head, view_agreement
from ._metrics import (
    ClusterReport,
    ari_score,
    cluster_report,
    hungarian_accuracy,
    nmi_score,
)

__all__ = [
    "ClusterReport",
    "ari_score",
    "cluster_report",
    "head_agreement",
    "hungarian_accuracy",
    "nmi_score",
    "select_head",
    "view_agreement",
]
