"""Clustering metrics (paper appendix A.4) and unsupervised head selection.

Public alias of :mod:`otcluster._metrics`::

    from otcluster.metrics import cluster_report, nmi_score, select_head
"""

from ._metrics import (
    ClusterReport,
    ari_score,
    cluster_report,
    head_agreement,
    hungarian_accuracy,
    nmi_score,
    select_head,
)

__all__ = [
    "ClusterReport",
    "ari_score",
    "cluster_report",
    "head_agreement",
    "hungarian_accuracy",
    "nmi_score",
    "select_head",
]
