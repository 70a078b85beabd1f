"""Agreement between clusterings of the same samples, without ground truth: choosing the most
consensual head (:func:`select_head`) and scoring how much views agree (:func:`view_agreement`,
e.g. to choose among restarts). NMI from :mod:`._metrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._metrics import _as_label_array, _codes, _nmi_codes

if TYPE_CHECKING:  # annotations only: this module does not import torch
    from ._typing import LabelsLike

__all__ = ["head_agreement", "select_head", "view_agreement"]


# --- unsupervised head selection ---------------------------------------------------------------

def head_agreement(labels: LabelsLike) -> np.ndarray:
    """Mean NMI of each head's clustering to the other heads' (no ground truth used).

    Parameters
    ----------
    labels : array-like of shape (n_heads, n_samples)
        Integer cluster labels of each head on the same samples (numpy or torch).

    Returns
    -------
    ndarray of shape (n_heads,), float64
        ``agreement[h] = mean_{g != h} NMI(labels[h], labels[g])``. With a single head there are
        no others and the entry is NaN.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D, empty, or not integer.

    Examples
    --------
    >>> head_agreement([[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]]).round(3).tolist()
    [0.5, 0.5, 0.0]
    """
    arr = _as_label_array(labels, "labels", ndim=2)
    H = arr.shape[0]
    if H == 1:
        return np.full(1, np.nan)
    pair = _pairwise_nmi(arr, collapsed=None)
    return (pair.sum(1) - 1.0) / (H - 1)


def select_head(labels: LabelsLike) -> int:
    """Index of the most consensual head: the largest :func:`head_agreement` (no ground truth).

    The public SeLaVi code picks the head with the best NMI to the ground truth, which leaks
    labels into the evaluation; this picks the head that agrees most with the other heads.
    Ties go to the lowest index; a single head gives 0.

    Parameters
    ----------
    labels : array-like of shape (n_heads, n_samples)
        Integer cluster labels of each head on the same samples.

    Returns
    -------
    int

    Examples
    --------
    >>> select_head([[0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0]])
    1
    """
    agreement = head_agreement(labels)
    if agreement.shape[0] == 1:
        return 0
    return int(np.argmax(agreement))


def view_agreement(labels: LabelsLike) -> float:
    """How much several views of the same samples agree on their clustering (no ground truth).

    The mean NMI over all pairs of views, e.g. the argmax of a model's video heads and of its
    audio heads on the same clips. SeLaVi's labels are what the modalities share, so among
    runs that differ only in their random seed, the run whose modalities agree most tends to
    have the better labels: use it to choose among restarts, as ``n_init`` does for k-means
    (measured in ``docs/benchmarks/restarts.md``).

    Parameters
    ----------
    labels : array-like of shape (n_views, n_samples)
        Integer cluster labels that each view gives the same samples (numpy or torch); at
        least two views.

    Returns
    -------
    float
        In [0, 1]; 1 when every view induces the same partition (up to renaming clusters) of
        at least two clusters. A pair in which a view puts every sample in one cluster counts
        0, even when both views do (where NMI's convention gives 1): a collapsed run shares
        nothing, and must not rank first.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D, empty, not integer, or has fewer than two views.

    Examples
    --------
    >>> view_agreement([[0, 0, 1, 1], [1, 1, 0, 0]])
    1.0
    >>> round(view_agreement([[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]]), 3)
    0.333
    >>> view_agreement([[0, 0, 0, 0], [2, 2, 2, 2]])  # collapsed views share nothing
    0.0
    """
    arr = _as_label_array(labels, "labels", ndim=2)
    if arr.shape[0] < 2:
        raise ValueError(f"view_agreement needs at least two views, got labels of shape "
                         f"{arr.shape}")
    pair = _pairwise_nmi(arr, collapsed=0.0)
    return float(pair[np.triu_indices(arr.shape[0], 1)].mean())


def _pairwise_nmi(arr: np.ndarray, collapsed: float | None) -> np.ndarray:
    """Symmetric (R, R) NMI between the rows of ``arr`` (ones on the diagonal); a pair with a
    one-cluster row gets ``collapsed`` instead (None: NMI's own convention)."""
    codes = [_codes(row) for row in arr]
    R = len(codes)
    pair = np.eye(R)
    for h in range(R):
        for g in range(h + 1, R):
            one = codes[h][1] == 1 or codes[g][1] == 1
            nmi = collapsed if one and collapsed is not None else _nmi_codes(*codes[h], *codes[g])
            pair[h, g] = pair[g, h] = nmi
    return pair
