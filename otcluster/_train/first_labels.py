"""The first labels from balanced k-means on the untrained encoders' features
(``TrainerConfig.init_labels = "kmeans"``).

SeLa's first clustering labels every sample from the random heads' eq. 6 log-probabilities: a
random projection of random features. With ``"kmeans"`` the first clustering clusters the
features themselves: each modality's pooled features are L2-normalised per sample (so every
modality has the same say, whatever its width or scale) and put side by side, and balanced
k-means (:class:`otcluster.OTKMeans`: uniform cluster sizes, as the prior warm-up) labels them,
one start per head so that the heads stay decorrelated. Every later clustering is the usual one;
the prior is sorted (eq. 4) onto the k-means clusters at the second.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["INIT_LABELS", "kmeans_labels", "side_by_side"]

#: ``TrainerConfig.init_labels`` values
INIT_LABELS = ("heads", "kmeans")


def side_by_side(features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(N, sum D_m)`` float64: each modality's rows L2-normalised, concatenated in order."""
    return torch.cat([torch.nn.functional.normalize(f.double(), dim=1) for f in features.values()],
                     dim=1)


def kmeans_labels(features: Mapping[str, torch.Tensor], n_clusters: int, n_heads: int,
                  seed: int, lam: float) -> torch.Tensor:
    """Labels ``(n_heads, N)`` int64: balanced k-means of :func:`side_by_side` features, head
    ``h`` started from k-means++ seeded with ``seed * 7919 + h``.

    ``lam`` is :class:`otcluster.OTKMeans`'s (relative to the mean cost). Needs scikit-learn
    (the ``video`` and ``dev`` extras have it).
    """
    from .._otkmeans import OTKMeans  # scikit-learn is optional for the core

    x = side_by_side(features).numpy()
    if x.shape[0] < n_clusters:
        raise ValueError(f"init_labels='kmeans' needs at least n_clusters={n_clusters} samples, "
                         f"got {x.shape[0]}")
    rows = [OTKMeans(n_clusters=n_clusters, lam=lam, random_state=seed * 7919 + h).fit(x).labels_
            for h in range(n_heads)]
    return torch.from_numpy(np.stack(rows)).to(torch.int64)
