"""Labels from plans that do not decide (issue 10 item 5): rows that tie are dealt out by the
plan's column masses (within 1 of ``N * prior`` for exactly tied rows), decided rows keep their
argmax, ordinary plans keep plain argmax labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otcluster import make_prior, sinkhorn, sinkhorn_features

pytestmark = pytest.mark.usefixtures("serial_numba")

PRIORS = {
    "uniform": lambda k: torch.full((k,), 1.0 / k, dtype=torch.float64),
    "zipf": lambda k: make_prior("zipf", k),
    "gaussian": lambda k: make_prior("gaussian", k, seed=3),
    "skewed": lambda k: torch.softmax(torch.linspace(0, 1.5, k, dtype=torch.float64), 0),
}


def counts(labels, k):
    return torch.bincount(labels.flatten(), minlength=k).double()


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize("n, k", [(103, 5), (1000, 10), (37, 4), (500, 31)])
def test_exactly_tied_rows_follow_the_prior(backend, prior, n, k):
    r = PRIORS[prior](k)
    assert float(r.max()) < 0.5  # argmax puts every row into one cluster: more than twice E_k
    x = torch.full((n, k), -np.log(k))  # every row the same (uniform network output)
    res = sinkhorn(x, prior=r, backend=backend)
    got = counts(res.labels, k)
    assert float((got - n * res.prior).abs().max()) < 1.0 + 1e-9, (got, n * res.prior)


def test_tied_rows_within_the_slack_keep_argmax():
    # a prior with one share above 1/2: argmax (every row in the big cluster) is within the
    # slack (twice the expected count), which leaves soft plans' argmax labels alone
    x = torch.zeros(37, 2)
    res = sinkhorn(x, prior=[0.4, 0.6], permute_prior=False)
    assert counts(res.labels, 2).tolist() == [0.0, 37.0]


def test_tied_rows_with_any_values_and_the_feature_path():
    n, k = 400, 6
    r = make_prior("zipf", k)
    row = torch.randn(k).log_softmax(0)
    res = sinkhorn(row.expand(n, k).contiguous(), prior=r)
    assert float((counts(res.labels, k) - n * res.prior).abs().max()) < 1.0 + 1e-9
    w = torch.randn(k, 4)
    feat = sinkhorn_features(torch.ones(n, 4), w, prior=r, block_rows=64)
    assert float((counts(feat.labels, k) - n * feat.prior).abs().max()) < 1.0 + 1e-9


def test_several_heads_each_follow_their_prior():
    H, n, k = 3, 200, 4
    r = torch.stack([PRIORS[p](k) for p in ("uniform", "zipf", "skewed")])
    res = sinkhorn(torch.zeros(H, n, k), prior=r)
    for h in range(H):
        assert float((counts(res.labels[h], k) - n * res.prior[h]).abs().max()) < 1.0 + 1e-9


@pytest.mark.parametrize("noise", [1e-9, 1e-6, 1e-4])
def test_near_tied_rows_follow_the_prior(noise):
    n, k = 600, 8
    r = make_prior("zipf", k)
    g = torch.Generator().manual_seed(1)
    x = (torch.zeros(n, k) + noise * torch.randn(n, k, generator=g)).log_softmax(1)
    res = sinkhorn(x, prior=r)
    got = counts(res.labels, k)
    # argmax would put nearly every row into one cluster; the plan's masses are n * prior
    assert float((got - n * res.prior).abs().max()) <= max(2.0, 0.02 * n / k), (got, n * res.prior)


def test_decided_rows_keep_their_argmax():
    n_dec, n_tie, k = 300, 300, 5
    g = torch.Generator().manual_seed(2)
    truth = torch.arange(n_dec) % k
    decided = torch.full((n_dec, k), -30.0)
    decided[torch.arange(n_dec), truth] = 0.0
    decided = decided + 0.1 * torch.randn(n_dec, k, generator=g)
    x = torch.cat([decided, torch.zeros(n_tie, k)]).log_softmax(1)
    res = sinkhorn(x, prior=None, return_plan=True)  # uniform: 120 per cluster
    assert torch.equal(res.labels[:n_dec], truth)
    assert torch.equal(res.labels[:n_dec], res.plan[:n_dec].argmax(1))
    got = counts(res.labels, k)
    assert float((got - (n_dec + n_tie) / k).abs().max()) < 1.0 + 1e-9, got


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_ordinary_plans_keep_plain_argmax(seed, backend):
    g = torch.Generator().manual_seed(seed)
    x = (2.0 * torch.randn(2000, 12, generator=g)).log_softmax(1)
    res = sinkhorn(x, prior=make_prior("gaussian", 12, seed=seed), return_plan=True, backend=backend)
    assert torch.equal(res.labels, res.plan.argmax(1))


def test_rounding_is_deterministic():
    x = torch.zeros(777, 9)
    a = sinkhorn(x, prior=make_prior("zipf", 9)).labels.clone()
    b = sinkhorn(x, prior=make_prior("zipf", 9)).labels
    assert torch.equal(a, b)
