"""Tests of the k-means baseline (faiss or scikit-learn backend)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from otcluster import KMeansResult, kmeans_baseline, nmi_score

HAS_FAISS = importlib.util.find_spec("faiss") is not None
backends = ["sklearn", pytest.param("faiss", marks=pytest.mark.skipif(
    not HAS_FAISS, reason="faiss not installed"))]


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=600, centers=5, n_features=8, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), y


def nearest(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    return d2.argmin(1), d2.min(1)


@pytest.mark.parametrize("backend", backends)
def test_recovers_blobs_and_reports_consistent_outputs(blobs, backend):
    x, y = blobs
    res = kmeans_baseline(x, 5, backend=backend, seed=0)
    assert isinstance(res, KMeansResult) and res.backend == backend
    assert res.labels.dtype == torch.int64 and res.labels.shape == (600,)
    assert res.centroids.shape == (5, 8) and res.centroids.dtype == torch.float32
    assert nmi_score(y, res.labels) > 0.95
    labels, d2 = nearest(x, res.centroids.numpy())
    assert np.mean(labels == res.labels.numpy()) > 0.99  # float32 ties aside
    assert res.inertia == pytest.approx(d2.sum(), rel=1e-4)


@pytest.mark.parametrize("backend", backends)
def test_seeded_runs_are_reproducible(blobs, backend):
    x, _ = blobs
    r1 = kmeans_baseline(x, 7, backend=backend, seed=3)
    r2 = kmeans_baseline(torch.from_numpy(x), 7, backend=backend, seed=3)
    assert torch.equal(r1.labels, r2.labels)
    assert torch.allclose(r1.centroids, r2.centroids)


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
def test_backends_agree_up_to_relabelling(blobs):
    x, _ = blobs
    a = kmeans_baseline(x, 5, backend="faiss", seed=0)
    b = kmeans_baseline(x, 5, backend="sklearn", seed=0)
    assert nmi_score(a.labels, b.labels) > 0.95
    assert a.inertia == pytest.approx(b.inertia, rel=0.05)


def test_auto_backend_prefers_faiss_and_falls_back_to_sklearn(blobs, monkeypatch):
    x, _ = blobs
    assert kmeans_baseline(x, 3).backend == ("faiss" if HAS_FAISS else "sklearn")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "faiss" else real_find_spec(name, *a))
    assert kmeans_baseline(x, 3).backend == "sklearn"
    with pytest.raises(ImportError, match="faiss"):
        kmeans_baseline(x, 3, backend="faiss")


def test_k_equal_to_n_samples_gives_zero_inertia():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    res = kmeans_baseline(x, 6, backend="sklearn")
    assert sorted(res.labels.tolist()) == list(range(6))
    assert res.inertia == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("features", "k", "kwargs", "match"),
    [
        (np.array([[0.0, np.nan], [1.0, 1.0]]), 1, {}, "NaN"),
        (np.array([[0.0, np.inf], [1.0, 1.0]]), 1, {}, "NaN or infinite"),
        (np.zeros((3, 2)), 4, {}, "k=4 must be <= n_samples=3"),
        (np.zeros((3, 2)), 0, {}, "k must be"),
        (np.zeros(3), 1, {}, "shape"),
        (np.zeros((0, 2)), 1, {}, "non-empty"),
        (np.zeros((3, 2)), 1, {"backend": "torch"}, "backend"),
        (np.zeros((3, 2)), 1, {"n_iter": 0}, "n_iter"),
        (np.array([["a", "b"]]), 1, {}, "real numbers"),
    ],
)
def test_bad_input_raises(features, k, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans_baseline(features, k, **kwargs)


def test_gpu_request_without_gpu_faiss_raises(blobs):
    gpu_faiss = HAS_FAISS and __import__("faiss").get_num_gpus() > 0
    if gpu_faiss:
        pytest.skip("GPU faiss available")
    with pytest.raises(RuntimeError, match="GPU"):
        kmeans_baseline(blobs[0], 3, gpu=True)


@pytest.mark.skipif(not (HAS_FAISS and torch.cuda.is_available()), reason="needs GPU faiss")
def test_gpu_faiss_matches_cpu_quality(blobs):
    if __import__("faiss").get_num_gpus() == 0:
        pytest.skip("faiss built without GPU support")
    x, y = blobs
    res = kmeans_baseline(torch.from_numpy(x).cuda(), 5, gpu=True)
    assert nmi_score(y, res.labels) > 0.95


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
def test_faiss_result_does_not_depend_on_the_thread_count():
    """The evaluation's k-means rows (and the demo's verdict) do not change with the thread
    count (docs/video.md, "Reproducibility")."""
    import faiss

    x, _ = make_blobs(n_samples=2000, centers=12, n_features=64, cluster_std=4.0, random_state=1)
    x = x.astype(np.float32)
    old = faiss.omp_get_max_threads()
    try:
        results = []
        for threads in (1, 2, 4):
            faiss.omp_set_num_threads(threads)
            results.append(kmeans_baseline(x, 12, backend="faiss", seed=0))
    finally:
        faiss.omp_set_num_threads(old)
    for res in results[1:]:
        assert torch.equal(res.labels, results[0].labels)
        assert torch.equal(res.centroids, results[0].centroids)
