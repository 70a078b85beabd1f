"""Clustering metrics of the paper's appendix A.4 (unsupervised head selection and the agreement
of views, which need no ground truth, are in :mod:`._agreement`).

NMI and ARI are computed here from the contingency table (numpy + scipy only, so the core
package does not need scikit-learn); the test suite checks them against scikit-learn.
All functions accept numpy arrays, torch tensors or lists of integer labels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: this module does not import torch
    from ._typing import LabelsLike

__all__ = [
    "ClusterReport",
    "cluster_report",
    "nmi_score",
    "ari_score",
    "hungarian_accuracy",
]


# --- validation --------------------------------------------------------------------------------

def _as_label_array(x: Any, name: str, *, ndim: int = 1) -> np.ndarray:
    from ._validation import as_array  # the core's one input coercer (imports torch: lazily)

    shape = "(n_samples,)" if ndim == 1 else "(n_heads, n_samples)"
    return as_array(x, name, ndims=(ndim,), kind="integer", shape=shape, nonempty=True)


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_label_array(y_true, "y_true")
    p = _as_label_array(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true and y_pred have different lengths: {t.shape[0]} != "
                         f"{p.shape[0]}")
    return t, p


# --- private computations (prior validation assumed) -------------------------------------------

def _codes(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Consecutive integer codes ``0..n_unique-1`` and their number."""
    uniq, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), int(uniq.shape[0])


def _entropy_of_counts(counts: np.ndarray) -> float:
    """Entropy in nats of the distribution proportional to ``counts`` (zeros ignored)."""
    counts = counts[counts > 0].astype(np.float64)
    n = counts.sum()
    return float(-(counts / n * (np.log(counts) - np.log(n))).sum())


def _cells(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """Non-zero cells of the contingency table of two code arrays: (row, col, count)."""
    flat = a * nb + b
    if na * nb <= 4 * a.shape[0] + 1024:
        counts = np.bincount(flat, minlength=na * nb)
        nz = np.flatnonzero(counts)
        return nz // nb, nz % nb, counts[nz]
    nz, counts = np.unique(flat, return_counts=True)
    return nz // nb, nz % nb, counts


def _mutual_info(rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, row_sums: np.ndarray,
                 col_sums: np.ndarray, n: int) -> float:
    c = counts.astype(np.float64)
    log_outer = np.log(row_sums[rows].astype(np.float64)) + np.log(col_sums[cols].astype(
        np.float64))
    mi = (c / n * (np.log(c) - log_outer + np.log(n))).sum()
    return max(float(mi), 0.0)


def _nmi_codes(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    """NMI with arithmetic normalisation (scikit-learn's conventions for degenerate cases)."""
    if na == nb == 1:
        return 1.0  # both labelings put everything together: identical partitions
    if na == 1 or nb == 1:
        return 0.0  # a constant labeling carries no information (exactly, not up to rounding)
    n = a.shape[0]
    rows, cols, counts = _cells(a, na, b, nb)
    row_sums = np.bincount(a, minlength=na)
    col_sums = np.bincount(b, minlength=nb)
    mi = _mutual_info(rows, cols, counts, row_sums, col_sums, n)
    if mi <= 0.0:
        return 0.0
    denom = 0.5 * (_entropy_of_counts(row_sums) + _entropy_of_counts(col_sums))
    return float(mi / denom)


def _ari_codes(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    """Adjusted Rand index from pair counts (exact integer arithmetic)."""
    n = int(a.shape[0])
    _, _, counts = _cells(a, na, b, nb)
    row_sums = np.bincount(a, minlength=na)
    col_sums = np.bincount(b, minlength=nb)
    # Python ints: products of pair counts overflow int64 beyond ~3e4 samples.
    sum_sq = int((counts.astype(np.int64) ** 2).sum())
    sum_rows_sq = int((row_sums.astype(np.int64) ** 2).sum())
    sum_cols_sq = int((col_sums.astype(np.int64) ** 2).sum())
    tp = sum_sq - n
    fp = sum_cols_sq - sum_sq  # pairs in the same cluster but different classes
    fn = sum_rows_sq - sum_sq  # pairs in the same class but different clusters
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def _contingency(t: np.ndarray, nt: int, p: np.ndarray, np_: int) -> np.ndarray:
    """Dense (n_classes, n_clusters) contingency table."""
    return np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_)


def _hungarian_acc(table: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment  # lazy: ~0.3 s of `import otcluster`

    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


# --- public metrics ----------------------------------------------------------------------------

def nmi_score(y_true: LabelsLike, y_pred: LabelsLike) -> float:
    """Normalised mutual information, arithmetic-mean normalisation.

    ``NMI = I(T; P) / ((H(T) + H(P)) / 2)``; 1 when both labelings are constant, 0 when the
    mutual information is 0 (scikit-learn's ``normalized_mutual_info_score`` conventions).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Integer labels (numpy, torch or list); label values are arbitrary.

    Returns
    -------
    float
        In [0, 1]; symmetric, invariant to relabelling.

    Raises
    ------
    ValueError
        If the inputs are empty, not 1-D, not integer, or differ in length.

    Examples
    --------
    >>> nmi_score([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    t, p = _check_pair(y_true, y_pred)
    return _nmi_codes(*_codes(t), *_codes(p))


def ari_score(y_true: LabelsLike, y_pred: LabelsLike) -> float:
    """Adjusted Rand index.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Integer labels (numpy, torch or list).

    Returns
    -------
    float
        1 for identical partitions, about 0 for independent ones (can be negative).

    Raises
    ------
    ValueError
        If the inputs are empty, not 1-D, not integer, or differ in length.

    Examples
    --------
    >>> ari_score([0, 0, 1, 1], [5, 5, 3, 3])
    1.0
    """
    t, p = _check_pair(y_true, y_pred)
    return _ari_codes(*_codes(t), *_codes(p))


def hungarian_accuracy(y_true: LabelsLike, y_pred: LabelsLike) -> float:
    """Accuracy after the best one-to-one matching of clusters to classes.

    The matching maximises the number of correctly matched samples (Hungarian algorithm on the
    contingency table). With more clusters than classes, the unmatched clusters count as wrong;
    with fewer, the unmatched classes do.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Integer labels (numpy, torch or list).

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        If the inputs are empty, not 1-D, not integer, or differ in length.

    Examples
    --------
    >>> hungarian_accuracy([0, 0, 1, 1], [2, 2, 2, 7])
    0.75
    """
    t, p = _check_pair(y_true, y_pred)
    ct, nt = _codes(t)
    cp, np_ = _codes(p)
    return _hungarian_acc(_contingency(ct, nt, cp, np_))


@dataclass(frozen=True)
class ClusterReport:
    """The evaluation of a clustering against ground truth (paper appendix A.4).

    Attributes
    ----------
    n_samples : int
        Number of samples.
    n_classes : int
        Number of distinct ground-truth classes.
    n_clusters : int
        Number of non-empty clusters (distinct predicted labels).
    nmi : float
        Normalised mutual information (arithmetic normalisation), in [0, 1].
    ari : float
        Adjusted Rand index.
    acc : float
        Accuracy after Hungarian matching, in [0, 1]; unmatched clusters count as wrong.
    mean_entropy : float
        Mean over clusters of the entropy (nats) of the ground-truth class distribution in the
        cluster (the paper's <H>; lower is purer).
    mean_max_purity : float
        Mean over clusters of the fraction of the cluster in its most frequent class (the
        paper's <p_max>, here as a fraction rather than a percentage).
    min_size, max_size : int
        Smallest and largest cluster size.
    mean_size : float
        Mean cluster size (``n_samples / n_clusters``).
    size_entropy : float
        Entropy (nats) of the cluster-size distribution; ``log(n_clusters)`` when balanced.
    """

    n_samples: int
    n_classes: int
    n_clusters: int
    nmi: float
    ari: float
    acc: float
    mean_entropy: float
    mean_max_purity: float
    min_size: int
    max_size: int
    mean_size: float
    size_entropy: float

    def to_dict(self) -> dict[str, float | int]:
        """The fields as a plain ``dict`` (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        rows = [
            ("samples", f"{self.n_samples}"),
            ("classes", f"{self.n_classes}"),
            ("clusters used", f"{self.n_clusters}"),
            ("NMI", f"{self.nmi:.4f}"),
            ("ARI", f"{self.ari:.4f}"),
            ("accuracy (Hungarian)", f"{self.acc:.4f}"),
            ("mean entropy <H> (nats)", f"{self.mean_entropy:.4f}"),
            ("mean max purity <p_max>", f"{self.mean_max_purity:.4f}"),
            ("cluster size min/mean/max", f"{self.min_size} / {self.mean_size:.1f} / "
                                          f"{self.max_size}"),
            ("cluster size entropy (nats)", f"{self.size_entropy:.4f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = ["ClusterReport", "-" * (width + 14)]
        lines += [f"{name:<{width}}  {value:>10}" for name, value in rows]
        return "\n".join(lines)


def cluster_report(y_true: LabelsLike, y_pred: LabelsLike) -> ClusterReport:
    """Evaluate a clustering against ground-truth labels (paper appendix A.4).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Ground-truth integer class labels (numpy, torch or list).
    y_pred : array-like of shape (n_samples,)
        Integer cluster labels. Label values need not be consecutive; clusters with no sample
        do not exist for this function (means are over non-empty clusters).

    Returns
    -------
    ClusterReport
        NMI, ARI, Hungarian accuracy, mean per-cluster entropy and maximal purity, and
        cluster-size statistics.

    Raises
    ------
    ValueError
        If the inputs are empty, not 1-D, not integer, or differ in length.

    Examples
    --------
    >>> r = cluster_report([0, 0, 1, 1, 1, 2], [0, 0, 1, 1, 1, 1])
    >>> r.n_clusters, r.acc, round(r.mean_max_purity, 3)
    (2, 0.8333333333333334, 0.875)
    """
    t, p = _check_pair(y_true, y_pred)
    ct, nt = _codes(t)
    cp, np_ = _codes(p)
    table = _contingency(ct, nt, cp, np_)  # (n_classes, n_clusters), every column non-empty
    sizes = table.sum(0)
    frac = table / sizes
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(frac > 0, frac * np.log(frac), 0.0).sum(0)
    n = int(t.shape[0])
    return ClusterReport(
        n_samples=n,
        n_classes=nt,
        n_clusters=np_,
        nmi=_nmi_codes(ct, nt, cp, np_),
        ari=_ari_codes(ct, nt, cp, np_),
        acc=_hungarian_acc(table),
        mean_entropy=float(ent.mean()),
        mean_max_purity=float(frac.max(0).mean()),
        min_size=int(sizes.min()),
        max_size=int(sizes.max()),
        mean_size=float(n / np_),
        size_entropy=_entropy_of_counts(sizes),
    )
