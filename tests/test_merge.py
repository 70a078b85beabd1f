"""merge_clusters / merge_log_probs: overclustered labels merged into K groups."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from otcluster import merge_clusters, merge_log_probs, nmi_score


def _split_blobs(rng, n_blobs=3, splits=3, per=20, dim=5):
    """Blobs far apart, each cut into ``splits`` fine clusters along its first axis."""
    centers = rng.normal(size=(n_blobs, dim)) * 50
    x, fine, blob = [], [], []
    for b in range(n_blobs):
        for s in range(splits):
            pts = centers[b] + rng.normal(size=(per, dim))
            pts[:, 0] += s * 3.0
            x.append(pts)
            fine += [b * splits + s] * per
            blob += [b] * per
    order = rng.permutation(len(fine))
    return np.concatenate(x)[order], np.array(fine)[order], np.array(blob)[order]


def test_fine_clusters_of_one_blob_are_merged():
    x, fine, blob = _split_blobs(np.random.default_rng(0))
    res = merge_clusters(x, fine, 3)
    merged = res.groups.numpy()[fine]
    assert nmi_score(blob, merged) == pytest.approx(1.0)
    assert res.sizes.tolist() == [20] * 9
    assert res.groups[0] == 0  # groups numbered by their first cluster
    assert torch.allclose(res.centroids[0], torch.as_tensor(x[fine == 0].mean(0)).float(),
                          atol=1e-5)


def _weighted_sse(c, w, groups):
    total = 0.0
    for g in set(groups):
        idx = [i for i, gi in enumerate(groups) if gi == g]
        mu = np.average(c[idx], axis=0, weights=w[idx])
        total += float((w[idx, None] * (c[idx] - mu) ** 2).sum())
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouping_is_the_best_weighted_partition_on_small_cases(seed):
    """Against brute force over every partition of 6 clusters into 2 groups."""
    rng = np.random.default_rng(seed)
    m, k = 6, 2
    x = rng.normal(size=(40, 3))
    labels = np.concatenate([np.arange(m), rng.integers(0, m, size=34)])
    res = merge_clusters(x, labels, k)
    c, w = res.centroids.double().numpy(), res.sizes.double().numpy()
    best = min(_weighted_sse(c, w, p) for p in itertools.product(range(k), repeat=m)
               if len(set(p)) == k)
    assert _weighted_sse(c, w, res.groups.tolist()) == pytest.approx(best, rel=1e-6)


def test_an_empty_cluster_joins_the_smallest_group():
    x = np.array([[0.0], [0.1], [0.2], [9.0], [9.1]])
    res = merge_clusters(x, [0, 0, 1, 3, 3], 2, n_clusters=5)
    assert res.sizes.tolist() == [2, 1, 0, 2, 0]
    assert res.groups.tolist() == [0, 0, 1, 1, 1]
    assert torch.isnan(res.centroids[2]).all()


@pytest.mark.parametrize(
    ("features", "labels", "k", "kw", "match"),
    [
        (np.zeros((4, 2)), [0, 1, 0], 1, {}, "labels has 3 entries but features has 4"),
        (np.array([[0.0], [np.nan]]), [0, 1], 1, {}, "NaN or infinite"),
        (np.zeros((3, 2)), [0, 1, 5], 1, {"n_clusters": 4}, r"labels must be in \[0, n_clusters = 4\)"),
        (np.zeros((3, 2)), [0, -1, 1], 1, {}, "labels must be in"),
        (np.zeros((3, 2)), [0, 1, 1], 3, {}, r"n_groups must be in \[1, 2\]"),
        (np.zeros((3, 2)), [0, 1, 1], 1, {"n_init": 0}, "n_init must be >= 1"),
    ],
)
def test_bad_input_is_named(features, labels, k, kw, match):
    with pytest.raises(ValueError, match=match):
        merge_clusters(features, labels, k, **kw)


@given(st.integers(2, 9), st.integers(1, 4), st.integers(0, 2**31 - 1),
       st.floats(0.1, 300.0))
def test_merged_log_probs_are_the_log_of_summed_probabilities(m, k, seed, scale):
    k = min(k, m)
    g = torch.Generator().manual_seed(seed)
    lp = (torch.randn(7, m, generator=g, dtype=torch.float64) * scale).log_softmax(-1)
    groups = torch.cat([torch.arange(k), torch.randint(0, k, (m - k,), generator=g)])
    out = merge_log_probs(lp, groups)
    onehot = torch.nn.functional.one_hot(groups, k).double()
    ref = (lp.exp() @ onehot).log()
    assert out.shape == (7, k)
    assert torch.allclose(out.logsumexp(-1), torch.zeros(7, dtype=torch.float64), atol=1e-9)
    finite = torch.isfinite(ref)
    assert torch.allclose(out[finite], ref[finite], atol=1e-9)
    # shifted far below exp's range (the plain log of summed exp gives -inf), the same up to it
    shifted = merge_log_probs(lp - 2000.0, groups)
    assert torch.isfinite(shifted[finite]).all()
    assert torch.allclose(shifted[finite] + 2000.0, out[finite], atol=1e-9)


def test_merge_log_probs_keeps_leading_axes_and_names_bad_input():
    lp = torch.randn(2, 5, 4).log_softmax(-1)
    assert merge_log_probs(lp, [0, 1, 1, 0], 3).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="4 clusters on its last axis but groups has 3"):
        merge_log_probs(lp, [0, 1, 1])
    with pytest.raises(ValueError, match=r"groups must be in \[0, 2\)"):
        merge_log_probs(lp, [0, 1, 2, 0], 2)
    bad = lp.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="without a finite entry"):
        merge_log_probs(bad, [0, 1, 1, 0])


def _paper_scale_groups() -> torch.Tensor:
    """927 fine clusters (3 x the paper's 309) of noisy 16-d points merged into 309 groups."""
    rng = np.random.default_rng(0)
    m, k, dim = 927, 309, 16
    labels = np.concatenate([np.arange(m), rng.integers(0, m, 4 * m)])
    x = rng.normal(size=(labels.size, dim)) + rng.normal(size=(m, dim))[labels] * 0.5
    return merge_clusters(x, labels, k, n_clusters=m, n_init=2).groups


def test_paper_scale_grouping_does_not_depend_on_the_thread_count():
    # scikit-learn's k-means splits the 927 centroids into chunks of 256 across its OpenMP
    # threads, and the BLAS distances use threads too; the groups must not depend on how many
    threadpoolctl = pytest.importorskip("threadpoolctl")  # a dependency of scikit-learn
    groups = {}
    for threads in (1, 2, 4):
        with threadpoolctl.threadpool_limits(threads):
            groups[threads] = _paper_scale_groups()
    assert len(torch.unique(groups[1])) == 309
    assert torch.equal(groups[1], groups[2]) and torch.equal(groups[1], groups[4])


def test_paper_scale_grouping_does_not_depend_on_the_blas_kernels(tmp_path):
    # Another CPU gets other OpenBLAS kernels (k-means' distances are BLAS products): emulated
    # with OPENBLAS_CORETYPE=Nehalem (SSE only) in a fresh process against this one's own choice
    script = tmp_path / "groups.py"  # this file loaded by path (tests/otcluster is no package)
    script.write_text("import importlib.util, json, sys\n"
                      "spec = importlib.util.spec_from_file_location('tm', sys.argv[1])\n"
                      "module = importlib.util.module_from_spec(spec)\n"
                      "spec.loader.exec_module(module)\n"
                      "from threadpoolctl import threadpool_info\n"
                      "arch = [i.get('architecture') for i in threadpool_info()\n"
                      "        if i['internal_api'] == 'openblas']\n"
                      "print(json.dumps([arch, module._paper_scale_groups().tolist()]))\n")
    env = {**os.environ, "OPENBLAS_CORETYPE": "Nehalem", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), __file__], env=env,
                         capture_output=True, text=True, check=True).stdout
    arch, groups = json.loads(out)
    assert arch and set(arch) == {"Nehalem"}  # the emulation took hold
    assert groups == _paper_scale_groups().tolist()
