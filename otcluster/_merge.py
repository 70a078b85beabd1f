"""Overclustering, merged: group M fine clusters into K by their centroids in feature space.

Self-labelling at K clusters can settle where one class is split in two and two others share a
cluster. Trained at M > K clusters a class can be split without being merged with another;
:func:`merge_clusters` then groups the M clusters into K by k-means of their centroids
(weighted by their sizes), and :func:`merge_log_probs` turns any ``(..., M)`` log-probabilities
into ``(..., K)`` ones (the log of each group's summed probability), so new samples are labelled
by the same groups.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ._typing import ArrayLike
from ._validation import as_array

__all__ = ["MergeResult", "merge_clusters", "merge_log_probs"]


class MergeResult(NamedTuple):
    """Result of :func:`merge_clusters`.

    Attributes
    ----------
    groups : LongTensor of shape (n_clusters,)
        The group in ``[0, n_groups)`` of every fine cluster, numbered in the order of their
        first non-empty cluster.
    centroids : Tensor of shape (n_clusters, n_features), float32
        Mean feature of each fine cluster (NaN for a cluster that no sample has).
    sizes : LongTensor of shape (n_clusters,)
        Samples in each fine cluster.
    """

    groups: torch.Tensor
    centroids: torch.Tensor
    sizes: torch.Tensor


def merge_clusters(features: ArrayLike, labels: ArrayLike, n_groups: int, *,
                   n_clusters: int | None = None, n_init: int = 20, seed: int = 0) -> MergeResult:
    """Group fine clusters into ``n_groups`` by weighted k-means of their centroids.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Features of the samples the fine clusters were found on (e.g. the trained encoders'
        pooled features, each modality L2-normalised and concatenated).
    labels : array-like of shape (n_samples,)
        Fine cluster of each sample, in ``[0, n_clusters)``.
    n_groups : int
        Number of groups K, ``1 <= K <= `` the number of non-empty fine clusters.
    n_clusters : int, optional
        Number of fine clusters M (default ``labels.max() + 1``).
    n_init : int, default 20
        k-means restarts (scikit-learn's ``KMeans``, k-means++ starts); the lowest inertia wins.
    seed : int, default 0

    Returns
    -------
    MergeResult
        A fine cluster that no sample has joins the group with the fewest samples (its
        probability mass is small everywhere, and the cluster prior is usually balanced).

    Raises
    ------
    ValueError
        On a shape mismatch, NaN or infinite features, labels outside ``[0, n_clusters)``, or
        fewer non-empty clusters than ``n_groups``.
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.1], [5.0], [5.1], [0.2], [5.2]])
    >>> merge_clusters(x, [0, 1, 2, 3, 0, 3], 2).groups.tolist()
    [0, 0, 1, 1]
    """
    x = as_array(features, "features", ndims=(2,), kind="real",
                 shape="(n_samples, n_features)", nonempty=True).astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"features contain {int((~np.isfinite(x)).sum())} NaN or infinite values")
    y = as_array(labels, "labels", ndims=(1,), kind="integer", shape="(n_samples,)",
                 nonempty=True).astype(np.int64)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries but features has {x.shape[0]} rows")
    m = int(y.max()) + 1 if n_clusters is None else int(n_clusters)
    if y.min() < 0 or y.max() >= m:
        raise ValueError(f"labels must be in [0, n_clusters = {m}), got [{y.min()}, {y.max()}]")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    sizes = np.bincount(y, minlength=m)
    used = np.flatnonzero(sizes)
    if not 1 <= n_groups <= used.size:
        raise ValueError(f"n_groups must be in [1, {used.size}] (the non-empty clusters), "
                         f"got {n_groups}")
    centroids = np.full((m, x.shape[1]), np.nan)
    sums = np.zeros((m, x.shape[1]))
    np.add.at(sums, y, x)
    centroids[used] = sums[used] / sizes[used, None]
    try:
        from sklearn.cluster import KMeans
    except ImportError as e:  # pragma: no cover - scikit-learn is in the video and dev extras
        raise ImportError("merge_clusters needs scikit-learn: pip install scikit-learn") from e
    km = KMeans(n_clusters=n_groups, n_init=n_init, random_state=seed)
    fine = km.fit(centroids[used], sample_weight=sizes[used]).labels_
    _, first = np.unique(fine, return_index=True)  # number the groups by their first cluster
    fine = np.argsort(np.argsort(first))[fine]
    groups = np.empty(m, dtype=np.int64)
    groups[used] = fine
    if used.size < m:
        per_group = np.bincount(fine, weights=sizes[used], minlength=n_groups)
        groups[sizes == 0] = int(per_group.argmin())
    return MergeResult(torch.from_numpy(groups), torch.from_numpy(centroids).float(),
                       torch.from_numpy(sizes).long())


def merge_log_probs(log_probs: torch.Tensor, groups: ArrayLike, n_groups: int | None = None
                    ) -> torch.Tensor:
    """Log-probabilities over groups: ``log sum_{j in g} p_j`` for every group ``g``.

    ``log_probs`` is ``(..., M)`` (normalised over its last axis), ``groups`` ``(M,)`` from
    :func:`merge_clusters`; returns ``(..., n_groups)`` (default ``groups.max() + 1``), in the
    dtype of ``log_probs``, computed stably (the row maximum is factored out).

    >>> lp = torch.tensor([[0.5, 0.3, 0.2]]).log()
    >>> merge_log_probs(lp, [1, 0, 1]).exp()
    tensor([[0.3000, 0.7000]])
    """
    g = torch.as_tensor(as_array(groups, "groups", ndims=(1,), kind="integer", shape="(M,)"))
    if log_probs.shape[-1] != g.shape[0]:
        raise ValueError(f"log_probs has {log_probs.shape[-1]} clusters on its last axis but "
                         f"groups has {g.shape[0]}")
    k = int(g.max()) + 1 if n_groups is None else int(n_groups)
    if g.min() < 0 or g.max() >= k:
        raise ValueError(f"groups must be in [0, {k}), got [{int(g.min())}, {int(g.max())}]")
    top = log_probs.amax(-1, keepdim=True)
    if not torch.isfinite(top).all():
        raise ValueError("log_probs has a row without a finite entry (NaN or all -inf)")
    p = (log_probs - top).exp()
    out = torch.zeros(*p.shape[:-1], k, dtype=p.dtype, device=p.device)
    out.index_add_(-1, g.to(p.device), p)
    return out.log() + top
