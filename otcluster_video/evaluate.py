"""Evaluation of video labellings: the paper's tables, degraded frames and retrieval.

Pure functions on arrays; :mod:`otcluster_video.recipe` feeds them from a trained run.

* :func:`score_labelings` scores named labellings against ground truth (NMI, ARI, Hungarian
  accuracy, mean entropy <H>, mean maximal purity <p_max>; paper appendix A.4) and returns
  :class:`EvalRow` s in the layout of the paper's tables 2 and 5.
* :func:`format_table` prints them; :func:`modality_labels` turns per-modality log-probabilities
  into video-only, audio-only and both-modalities labels.
* :func:`degrade_frames` is the nearest-neighbour down- then up-sampling of fig. 2.
* :func:`retrieval_recall` is the R@k of table 4 (cosine kNN from test to train).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from otcluster import average_views
from otcluster.metrics import cluster_report

from ._transforms import degrade_frames

__all__ = [
    "EvalRow",
    "degrade_frames",
    "format_table",
    "modality_labels",
    "retrieval_recall",
    "score_labelings",
]


@dataclass(frozen=True)
class EvalRow:
    """One line of an evaluation table.

    Attributes
    ----------
    method : str
        What produced the labels, e.g. ``"SeLaVi heads"`` or ``"k-means, random init"``.
    video, audio : bool
        Which streams the labels are computed from.
    head : int or None
        Clustering head (``None`` for k-means).
    nmi, ari, acc : float
        NMI, adjusted Rand index and Hungarian accuracy, as fractions.
    mean_entropy : float
        Mean per-cluster entropy of the ground truth, <H>, in nats.
    mean_max_purity : float
        Mean per-cluster maximal purity, <p_max>, as a fraction.
    n_clusters : int
        Non-empty clusters.
    note : str
        Free text (e.g. ``"selected head"``).
    """

    method: str
    video: bool
    audio: bool
    head: int | None
    nmi: float
    ari: float
    acc: float
    mean_entropy: float
    mean_max_purity: float
    n_clusters: int
    note: str = ""

    @property
    def streams(self) -> str:
        """``"video"``, ``"audio"`` or ``"video+audio"``."""
        return "+".join(s for s, on in (("video", self.video), ("audio", self.audio)) if on)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable), with ``streams`` added."""
        return {**dataclasses.asdict(self), "streams": self.streams}


def modality_labels(log_probs: Mapping[str, Any], weights: Any = None) -> dict[str, torch.Tensor]:
    """Labels of every head from each modality alone and from both (mean log-probabilities).

    Parameters
    ----------
    log_probs : mapping of str to tensor of shape (n_heads, n_samples, n_clusters)
        Log-probabilities of each modality's heads, e.g. ``{"video": ..., "audio": ...}``.
    weights : sequence of float or "confidence", optional
        Weights of the modalities in ``"both"`` (in ``log_probs``' order; default equal), e.g.
        a trained model's ``weights_of(log_probs)``, or ``"confidence"``
        (:func:`otcluster.confidence_weights`, per head).

    Returns
    -------
    dict of str to LongTensor of shape (n_heads, n_samples)
        One entry per modality (argmax of its own heads) and ``"both"``: the argmax of the mean
        over modalities of the log-probabilities (paper eq. 6). ``"both"`` is present only with
        two or more modalities.

    Examples
    --------
    >>> lp = {"video": torch.tensor([[[0.0, -2.0]]]), "audio": torch.tensor([[[-3.0, 0.0]]])}
    >>> {k: v.tolist() for k, v in modality_labels(lp).items()}
    {'video': [[0]], 'audio': [[1]], 'both': [[1]]}
    """
    if not log_probs:
        raise ValueError("log_probs is empty: need at least one modality")
    tensors = {k: torch.as_tensor(v).float() for k, v in log_probs.items()}
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if any(len(s) != 3 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(
            f"log_probs must all have the same shape (n_heads, n_samples, n_clusters), got {shapes}"
        )
    out = {k: v.argmax(-1) for k, v in tensors.items()}
    if len(tensors) > 1:  # eq. 6 by the core's one implementation (the views are log-probs)
        out["both"] = average_views(list(tensors.values()), normalize=False,
                                    weights=weights).argmax(-1)
    return out


def score_labelings(
    y_true: Any,
    labelings: Sequence[tuple[str, bool, bool, int | None, Any]],
    *,
    note: str = "",
) -> list[EvalRow]:
    """Score labellings of the same samples against ground truth.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Integer ground-truth classes.
    labelings : sequence of (method, video, audio, head, labels)
        ``labels`` is array-like of shape (n_samples,); the other fields are copied into the
        row (see :class:`EvalRow`).
    note : str
        Copied into every row.

    Returns
    -------
    list of EvalRow
        In the order given.

    Examples
    --------
    >>> rows = score_labelings([0, 0, 1, 1], [("perfect", True, False, 0, [1, 1, 0, 0])])
    >>> rows[0].nmi, rows[0].acc, rows[0].streams
    (1.0, 1.0, 'video')
    """
    rows = []
    for method, video, audio, head, labels in labelings:
        r = cluster_report(y_true, labels)
        rows.append(
            EvalRow(
                method=str(method),
                video=bool(video),
                audio=bool(audio),
                head=None if head is None else int(head),
                nmi=r.nmi,
                ari=r.ari,
                acc=r.acc,
                mean_entropy=r.mean_entropy,
                mean_max_purity=r.mean_max_purity,
                n_clusters=r.n_clusters,
                note=note,
            )
        )
    return rows


def format_table(rows: Sequence[EvalRow], *, title: str = "") -> str:
    """Render rows as a fixed-width text table in the paper's layout (tables 2 and 5).

    NMI, ARI, Acc and <p_max> are printed in percent, <H> in nats, as in the paper.

    Parameters
    ----------
    rows : sequence of EvalRow
    title : str
        Printed above the table.

    Returns
    -------
    str
    """
    header = ("Method", "V", "A", "head", "NMI", "ARI", "Acc", "<H>", "<p_max>", "K", "note")
    body = [
        (
            r.method,
            "x" if r.video else "-",
            "x" if r.audio else "-",
            "" if r.head is None else str(r.head),
            f"{100 * r.nmi:.1f}",
            f"{100 * r.ari:.1f}",
            f"{100 * r.acc:.1f}",
            f"{r.mean_entropy:.2f}",
            f"{100 * r.mean_max_purity:.1f}",
            str(r.n_clusters),
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    left = {0, 10}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [title] if title else []
    out += [line(header), "-" * len(line(header))]
    out += [line(b) for b in body]
    return "\n".join(out)


def retrieval_recall(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    ks: Sequence[int] = (1, 5, 20),
) -> dict[int, float]:
    """Recall at k of cosine nearest-neighbour retrieval from test to train (paper table 4).

    A test sample counts as retrieved at ``k`` when its class is among the classes of its ``k``
    nearest training samples (cosine similarity, exact search with faiss).

    Parameters
    ----------
    train_features : array-like of shape (n_train, d)
    train_labels : array-like of shape (n_train,)
        Integer classes.
    test_features : array-like of shape (n_test, d)
    test_labels : array-like of shape (n_test,)
    ks : sequence of int
        Neighbourhood sizes; each is capped at ``n_train``.

    Returns
    -------
    dict of int to float
        ``{k: recall}`` with recall in [0, 1].

    Examples
    --------
    >>> tr = np.array([[1, 0], [0, 1], [1, 0.1]], dtype="float32")
    >>> te = np.array([[0.1, 1], [1, 0]], dtype="float32")
    >>> retrieval_recall(tr, [0, 1, 0], te, [1, 1], ks=(1, 2))
    {1: 0.5, 2: 0.5}
    """
    import faiss

    xb = _features(train_features, "train_features")
    xq = _features(test_features, "test_features")
    yb = np.asarray(torch.as_tensor(train_labels)).reshape(-1)
    yq = np.asarray(torch.as_tensor(test_labels)).reshape(-1)
    if xb.shape[1] != xq.shape[1]:
        raise ValueError(f"feature dimensions differ: train {xb.shape[1]}, test {xq.shape[1]}")
    if len(yb) != len(xb) or len(yq) != len(xq):
        raise ValueError("features and labels must have the same number of rows")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    faiss.normalize_L2(xb)
    faiss.normalize_L2(xq)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    kmax = min(max(ks), len(xb))
    _, nn_idx = index.search(xq, kmax)
    hits = yb[nn_idx] == yq[:, None]  # (n_test, kmax)
    return {k: float(hits[:, : min(k, kmax)].any(1).mean()) for k in ks}


def _features(x: Any, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, d) with n >= 1, got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32).copy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr
