"""Tests of the clustering metrics (paper appendix A.4) and unsupervised head selection."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from otcluster.metrics import (
    ClusterReport,
    ari_score,
    cluster_report,
    head_agreement,
    hungarian_accuracy,
    nmi_score,
    select_head,
    view_agreement,
)

labelings = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-3, 6), min_size=n, max_size=n),
        st.lists(st.integers(0, 9), min_size=n, max_size=n),
    )
)


def brute_force_accuracy(y_true, y_pred) -> float:
    classes, clusters = sorted(set(y_true)), sorted(set(y_pred))
    best = 0
    # Every one-to-one matching of clusters to classes (some clusters or classes unmatched).
    for m in range(min(len(classes), len(clusters)) + 1):
        for cl in itertools.permutations(clusters, m):
            for cs in itertools.combinations(classes, m):
                for perm in itertools.permutations(cs):
                    mapping = dict(zip(cl, perm))
                    best = max(best, sum(mapping.get(p) == t for t, p in zip(y_true, y_pred)))
    return best / len(y_true)


# --- agreement with scikit-learn ---------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(labelings)
def test_nmi_and_ari_match_sklearn(pair):
    y_true, y_pred = pair
    assert nmi_score(y_true, y_pred) == pytest.approx(
        normalized_mutual_info_score(y_true, y_pred), abs=1e-10)
    assert ari_score(y_true, y_pred) == pytest.approx(
        adjusted_rand_score(y_true, y_pred), abs=1e-10)


def test_nmi_and_ari_match_sklearn_on_large_input():
    # 200k samples: pair counts exceed int64 products; many clusters use the sparse path.
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 300, 200_000)
    y_pred = np.where(rng.random(200_000) < 0.6, y_true * 7 % 1000, rng.integers(0, 1000, 200_000))
    assert nmi_score(y_true, y_pred) == pytest.approx(
        normalized_mutual_info_score(y_true, y_pred), abs=1e-9)
    assert ari_score(y_true, y_pred) == pytest.approx(adjusted_rand_score(y_true, y_pred),
                                                      abs=1e-9)


def test_degenerate_cases_follow_sklearn_conventions():
    # Exact by contract: these cases are decided before any floating-point arithmetic.
    assert nmi_score([3, 3, 3], [1, 1, 1]) == 1.0
    assert nmi_score([0, 1, 2], [0, 0, 0]) == 0.0
    assert nmi_score([0, 0, 1, 2, 2, 1, 0], [4] * 7) == 0.0
    assert nmi_score([9] * 7, [0, 0, 1, 2, 2, 1, 0]) == 0.0
    assert ari_score([0, 1, 2], [5, 6, 7]) == 1.0
    assert ari_score([4], [2]) == 1.0


# --- hand-computed cases -----------------------------------------------------------------------

def test_nmi_hand_computed():
    # T = [0,0,1,1], P = [0,0,0,1]: H(T) = log 2, H(P) = H(3/4, 1/4),
    # I = 1/2 log(2/(1/2 * 3/2))... computed from the joint below.
    joint = {(0, 0): 0.5, (1, 0): 0.25, (1, 1): 0.25}
    pt, pp = {0: 0.5, 1: 0.5}, {0: 0.75, 1: 0.25}
    mi = sum(p * math.log(p / (pt[t] * pp[c])) for (t, c), p in joint.items())
    ht = math.log(2)
    hp = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert nmi_score([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi / ((ht + hp) / 2), rel=1e-12)


def test_ari_hand_computed():
    # Rand index pair counts for T=[0,0,0,1,1,1], P=[0,0,1,1,2,2]:
    # sum_ij C(n_ij,2) = 1+0+0+1 = 2 (cells 2,1,1,2); classes: 2*C(3,2)=6; clusters: 3*C(2,2)=3.
    index, a, b, total = 2, 6, 3, math.comb(6, 2)
    expected = a * b / total
    ari = (index - expected) / ((a + b) / 2 - expected)
    assert ari_score([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(ari, rel=1e-12)


def test_accuracy_hand_computed_with_more_clusters_than_classes():
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 3]
    # Best matching: one of {0, 1} -> class 0 (2 right), 2 -> class 1 (3 right); 3 unmatched.
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(5 / 8)


def test_accuracy_with_fewer_clusters_than_classes():
    y_true = [0, 1, 2, 2, 2, 1]
    y_pred = [4, 4, 4, 4, 4, 4]
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(3 / 6)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
    st.lists(st.integers(0, 4), min_size=n, max_size=n))))
def test_accuracy_matches_brute_force(pair):
    y_true, y_pred = pair
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(brute_force_accuracy(y_true, y_pred))


def test_accuracy_is_invariant_to_relabelling():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 5, 300))
    relabel = np.array([3, 0, 4, 1, 2])
    acc = hungarian_accuracy(y_true, y_pred)
    assert acc == pytest.approx(hungarian_accuracy(y_true, relabel[y_pred]))
    assert acc >= np.mean(y_true == y_pred) - 1e-12  # the identity matching is one candidate


def test_report_hand_computed():
    #            cluster 10: classes 0,0,1   cluster 20: 1,1,1,1   cluster 30: 2
    y_true = np.array([0, 0, 1, 1, 1, 1, 1, 2])
    y_pred = np.array([10, 10, 10, 20, 20, 20, 20, 30])
    r = cluster_report(y_true, y_pred)
    h10 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert r.n_samples == 8 and r.n_classes == 3 and r.n_clusters == 3
    assert r.mean_entropy == pytest.approx((h10 + 0 + 0) / 3)
    assert r.mean_max_purity == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert r.acc == pytest.approx(7 / 8)
    assert (r.min_size, r.max_size) == (1, 4)
    assert r.mean_size == pytest.approx(8 / 3)
    sizes = np.array([3, 4, 1]) / 8
    assert r.size_entropy == pytest.approx(-(sizes * np.log(sizes)).sum())
    assert r.nmi == pytest.approx(normalized_mutual_info_score(y_true, y_pred))
    assert r.ari == pytest.approx(adjusted_rand_score(y_true, y_pred))


def test_perfect_and_balanced_clustering_report():
    y = np.repeat(np.arange(4), 25)
    r = cluster_report(y, (y + 1) % 4)
    assert (r.nmi, r.ari, r.acc, r.mean_max_purity) == (1.0, 1.0, 1.0, 1.0)
    assert r.mean_entropy == 0.0
    assert r.size_entropy == pytest.approx(math.log(4))


def test_report_accepts_numpy_torch_and_lists_alike():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 4, 50)
    y_pred = rng.integers(0, 6, 50)
    ref = cluster_report(y_true, y_pred)
    assert cluster_report(torch.from_numpy(y_true), torch.from_numpy(y_pred)) == ref
    assert cluster_report(y_true.tolist(), y_pred.astype(np.int32).tolist()) == ref


def test_report_to_dict_and_str():
    r = cluster_report([0, 0, 1, 1, 2], [1, 1, 0, 0, 0])
    d = r.to_dict()
    assert isinstance(r, ClusterReport)
    assert set(d) >= {"nmi", "ari", "acc", "mean_entropy", "mean_max_purity", "n_clusters",
                      "min_size", "max_size", "mean_size", "size_entropy"}
    assert d["acc"] == r.acc == pytest.approx(4 / 5)
    json.dumps(d)  # plain Python numbers
    text = str(r)
    assert "NMI" in text and f"{r.nmi:.4f}" in text and "accuracy" in text
    assert len(text.splitlines()) >= 10


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([0, 1, 1], [0, 1], "different lengths"),
        ([], [], "empty"),
        ([0.0, 1.0], [0, 1], "integer"),
        ([0, 1], np.array([0.5, 1.0]), "integer"),
        ([[0, 1]], [[0, 1]], "shape"),
        ([True, False], [0, 1], "integer"),
    ],
)
@pytest.mark.parametrize("fn", [nmi_score, ari_score, hungarian_accuracy, cluster_report])
def test_bad_input_raises(fn, y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        fn(y_true, y_pred)


def test_head_functions_reject_bad_input():
    with pytest.raises(ValueError, match="shape"):
        head_agreement([0, 1, 2])
    with pytest.raises(ValueError, match="integer"):
        select_head(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        head_agreement(np.zeros((2, 0), dtype=np.int64))


# --- unsupervised head selection ---------------------------------------------------------------

def test_head_agreement_is_mean_pairwise_nmi():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(4, 200))
    agreement = head_agreement(torch.from_numpy(labels))
    expected = [np.mean([normalized_mutual_info_score(labels[h], labels[g])
                         for g in range(4) if g != h]) for h in range(4)]
    np.testing.assert_allclose(agreement, expected, atol=1e-10)


def test_select_head_picks_the_consensual_head_without_ground_truth():
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 6, 600)

    def noisy(rate):
        return np.where(rng.random(600) < rate, rng.integers(0, 6, 600), truth)

    # Head 2 is the cleanest copy of the shared structure; heads 0 and 4 are mostly noise.
    labels = np.stack([rng.integers(0, 6, 600), noisy(0.5), noisy(0.05), noisy(0.5),
                       rng.integers(0, 6, 600)])
    labels[1] = (labels[1] + 2) % 6  # relabelling must not matter
    assert select_head(labels) == 2
    agreement = head_agreement(labels)
    assert agreement[2] > agreement[1] > agreement[0]


def test_single_head():
    assert select_head([[0, 1, 1]]) == 0
    assert np.isnan(head_agreement([[0, 1, 1]])).all()


# --- agreement of views (choosing among restarts) ----------------------------------------------

def test_view_agreement_is_the_mean_nmi_over_pairs_of_views():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=(3, 150))
    pairs = [normalized_mutual_info_score(labels[a], labels[b])
             for a, b in itertools.combinations(range(3), 2)]
    assert view_agreement(torch.from_numpy(labels)) == pytest.approx(np.mean(pairs), abs=1e-10)
    two = labels[:2]
    assert view_agreement(two) == pytest.approx(normalized_mutual_info_score(*two), abs=1e-10)


def test_view_agreement_ranks_views_that_share_more_structure_higher():
    rng = np.random.default_rng(6)
    truth = rng.integers(0, 6, 500)

    def view(rate):
        return np.where(rng.random(500) < rate, rng.integers(0, 6, 500), truth)

    renamed = (truth + 3) % 6
    assert view_agreement([truth, renamed]) == pytest.approx(1.0)
    scores = [view_agreement([view(r), view(r)]) for r in (0.1, 0.5, 0.9)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[2] < 0.1


def test_view_agreement_gives_collapsed_views_zero():
    # NMI's convention scores two one-cluster labelings 1; a collapsed run must not rank first
    assert nmi_score([0, 0, 0, 0], [1, 1, 1, 1]) == 1.0
    assert view_agreement([[0, 0, 0, 0], [1, 1, 1, 1]]) == 0.0
    assert view_agreement([[0, 1, 0, 1], [3, 3, 3, 3]]) == 0.0
    assert view_agreement([[0, 1, 0, 1], [1, 0, 1, 0], [2, 2, 2, 2]]) == pytest.approx(1 / 3)


def test_view_agreement_rejects_fewer_than_two_views_and_bad_input():
    with pytest.raises(ValueError, match="at least two views"):
        view_agreement([[0, 1, 1]])
    with pytest.raises(ValueError, match="shape"):
        view_agreement([0, 1, 1])
    with pytest.raises(ValueError, match="integer"):
        view_agreement(np.zeros((2, 3)))
