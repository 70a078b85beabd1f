"""Eq. 4 with a warm start (issue 10 item 4, the early-sorting failure): the prior is ranked by
the masses the data gives the clusters, not by the warm-started kernel's masses (which are the
previous clustering's sorted prior, so the permutation drawn at the first clustering stayed)."""

from __future__ import annotations

import pytest
import torch

from otcluster import SinkhornLabeler, make_prior, sinkhorn, sinkhorn_features

pytestmark = pytest.mark.usefixtures("serial_numba")


def skewed(n: int = 600, k: int = 5, seed: int = 0) -> torch.Tensor:
    """Log-probabilities whose argmax sizes rank the clusters 3 > 1 > 4 > 0 > 2."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([0.12, 0.25, 0.05, 0.40, 0.18])
    y = torch.multinomial(sizes, n, replacement=True, generator=g)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), y] += 4.0
    return logits.log_softmax(1)


def test_warm_start_does_not_freeze_the_permutation():
    x, r = skewed(), make_prior("zipf", 5)
    # a previous clustering that gave the largest share to cluster 0 (e.g. a random network)
    stale = sinkhorn(x, prior=r, permute_prior=False)
    cold = sinkhorn(x, prior=r, permute_prior=True)
    warm = sinkhorn(x, prior=r, permute_prior=True, warm_start=stale)
    assert int(cold.prior.argmax()) == 3
    assert torch.equal(warm.prior, cold.prior)  # ranked by the data, not by the warm start
    assert torch.equal(warm.labels, cold.labels)


def test_order_is_the_prior_free_mass_order():
    x, r = skewed(seed=1), make_prior("zipf", 5)
    free = torch.softmax(20.0 * x.double(), 1).mean(0)
    stale = sinkhorn(x, prior=r.flip(0), permute_prior=False)
    res = sinkhorn(x, prior=r, permute_prior=True, warm_start=stale)
    assert torch.equal(torch.argsort(res.prior), torch.argsort(free))


def test_large_warm_potentials_take_the_rebuild_path():
    x, r = skewed(seed=2), make_prior("zipf", 5)
    far = torch.tensor([0.0, -40.0, -15.0, -80.0, -3.0], dtype=torch.float64)
    res = sinkhorn(x, prior=r, permute_prior=True, warm_start=far)
    assert int(res.prior.argmax()) == 3 and bool(res.converged)


def test_feature_path_and_labeler_agree():
    g = torch.Generator().manual_seed(3)
    f, w = torch.randn(500, 6, generator=g), torch.randn(5, 6, generator=g)
    x = torch.log_softmax(f @ w.T, 1)
    r = make_prior("zipf", 5)
    stale = sinkhorn(x, prior=r, permute_prior=False)
    dense = sinkhorn(x, prior=r, permute_prior=True, warm_start=stale, dtype=torch.float64)
    feat = sinkhorn_features(f, w, prior=r, permute_prior=True, warm_start=stale,
                             dtype=torch.float64)
    assert torch.equal(dense.prior, feat.prior)
    lab = SinkhornLabeler(5, prior="zipf")
    first = lab.fit(x.flip(1)).result_.prior.clone()  # the clusters ranked the other way round
    second = lab.fit(x).result_.prior  # warm-started from the first fit
    assert torch.equal(torch.argsort(second), torch.argsort(dense.prior))
    assert not torch.equal(first, second)
