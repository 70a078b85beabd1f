"""k-means baseline on encoder features (the paper's comparison: faiss k-means, k = #classes)."""

from __future__ import annotations

import importlib.util
from typing import Any, NamedTuple

import numpy as np
import torch

from ._typing import ArrayLike
from ._validation import as_array

__all__ = ["KMeansResult", "kmeans_baseline"]

KMEANS_BACKENDS = ("auto", "faiss", "sklearn")


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans_baseline`.

    Attributes
    ----------
    labels : LongTensor of shape (n_samples,)
        Index of the nearest centroid of each sample.
    centroids : Tensor of shape (k, n_features), float32
    inertia : float
        Sum of squared Euclidean distances of the samples to their nearest centroid.
    backend : str
        ``"faiss"`` or ``"sklearn"``: the implementation that ran.
    """

    labels: torch.Tensor
    centroids: torch.Tensor
    inertia: float
    backend: str


def _as_features(features: Any) -> np.ndarray:
    x = as_array(features, "features", ndims=(2,), kind="real", shape="(n_samples, n_features)",
                 nonempty=True)  # the core's one input coercer
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"features contain {int((~np.isfinite(x)).sum())} NaN or infinite values")
    return x


def _faiss_gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _kmeans_faiss(x: np.ndarray, k: int, n_iter: int, seed: int, gpu: bool
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    import faiss

    d = x.shape[1]
    # Use every sample (faiss otherwise subsamples to 256 points per centroid) and do not warn
    # about few points per centroid: this is a baseline on the data as given.
    km = faiss.Kmeans(d, k, niter=n_iter, seed=seed, gpu=gpu, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=x.shape[0])
    km.train(x)
    dist, labels = km.index.search(x, 1)  # squared L2 to the nearest centroid
    inertia = float(dist.sum(dtype=np.float64))
    return labels[:, 0].astype(np.int64), np.asarray(km.centroids, dtype=np.float32), inertia


def _kmeans_sklearn(x: np.ndarray, k: int, n_iter: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, max_iter=n_iter, random_state=seed).fit(x)
    # scikit-learn ends with an assignment step: labels_ are the nearest centroids.
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32), float(km.inertia_)


def kmeans_baseline(
    features: ArrayLike,
    k: int,
    *,
    n_iter: int = 25,
    seed: int = 0,
    backend: str = "auto",
    gpu: bool = False,
) -> KMeansResult:
    """k-means on features, as the paper's baseline (faiss k-means with k = number of classes).

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Numpy array or torch tensor (any device; copied to the CPU as float32).
    k : int
        Number of clusters, ``1 <= k <= n_samples``.
    n_iter : int, default 25
        Lloyd iterations (faiss ``niter``; scikit-learn ``max_iter``, which may stop earlier).
    seed : int, default 0
        Seed of the initialisation (faiss: random samples; scikit-learn: k-means++).
    backend : {"auto", "faiss", "sklearn"}, default "auto"
        ``"auto"`` uses faiss when it is importable, else scikit-learn.
    gpu : bool, default False
        Run faiss on the GPU(s); needs a faiss build with GPU support and a visible GPU.

    Returns
    -------
    KMeansResult
        ``labels`` (LongTensor (n_samples,)), ``centroids`` (float32 Tensor (k, n_features)),
        ``inertia`` (float), ``backend``. Labels are the nearest centroid of every sample
        (both backends end with an assignment step); ``inertia`` is computed from them.

    Raises
    ------
    ValueError
        If the features are not 2-D, empty, or contain NaN / infinite values; if
        ``k < 1`` or ``k > n_samples``; if a parameter is out of range.
    ImportError
        If the requested backend is not installed.
    RuntimeError
        If ``gpu=True`` and no GPU-enabled faiss with a visible GPU is available.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.concatenate([np.zeros((5, 2)), np.ones((5, 2)) * 10]).astype("float32")
    >>> res = kmeans_baseline(x, 2, backend="sklearn")
    >>> sorted(np.bincount(res.labels.numpy()).tolist()), round(res.inertia, 6)
    ([5, 5], 0.0)
    """
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"backend must be one of {KMEANS_BACKENDS}, got {backend!r}")
    for name, value in (("k", k), ("n_iter", n_iter)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    x = _as_features(features)
    if k > x.shape[0]:
        raise ValueError(f"k={k} must be <= n_samples={x.shape[0]}")
    has_faiss = importlib.util.find_spec("faiss") is not None
    if backend == "auto":
        backend = "faiss" if has_faiss else "sklearn"
    if backend == "faiss" and not has_faiss:
        raise ImportError("backend='faiss' needs faiss: pip install faiss-cpu (or faiss-gpu)")
    if backend == "sklearn" and importlib.util.find_spec("sklearn") is None:
        raise ImportError("backend='sklearn' needs scikit-learn: pip install scikit-learn")
    if gpu and (backend != "faiss" or not _faiss_gpu_available()):
        raise RuntimeError("gpu=True needs faiss built with GPU support (faiss-gpu) and a "
                           "visible GPU")
    if backend == "faiss":
        labels, centroids, inertia = _kmeans_faiss(x, int(k), int(n_iter), int(seed), bool(gpu))
    else:
        labels, centroids, inertia = _kmeans_sklearn(x, int(k), int(n_iter), int(seed))
    return KMeansResult(torch.from_numpy(labels), torch.from_numpy(centroids), inertia, backend)
