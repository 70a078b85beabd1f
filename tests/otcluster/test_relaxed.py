"""Semi-relaxed cluster marginals (``tau``): agreement with POT's unbalanced solver, the two
limits (balanced, prior-free softmax), hard rows, the Anderson acceleration of the damped update,
the feature path, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otcluster import SinkhornLabeler, make_prior, sinkhorn, sinkhorn_features

pytestmark = pytest.mark.usefixtures("serial_numba")

F64 = torch.float64


def problem(n: int, k: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g, dtype=F64) * scale).log_softmax(1)


def solve(x, r, tau, **kw):
    kw = {"lam": 5.0, "prior": r, "permute_prior": False, "tol": 1e-11, "max_iter": 5000,
          "dtype": F64, "return_plan": True, **kw}
    return sinkhorn(x, tau=tau, **kw)


@pytest.mark.filterwarnings("ignore:If reg_type = entropy")
@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pot_sinkhorn_unbalanced(tau, seed):
    ot = pytest.importorskip("ot")
    N, K, lam = 40, 5, 5.0
    x = problem(N, K, seed)
    r = make_prior("zipf", K)
    res = solve(x, r, tau, lam=lam)
    assert bool(res.converged)
    ref = ot.unbalanced.sinkhorn_unbalanced(
        np.full(N, 1.0 / N), r.numpy(), -x.numpy(), 1.0 / lam, (math.inf, tau),
        reg_type="entropy", numItermax=100_000, stopThr=1e-15)
    plan = res.plan.numpy()
    np.testing.assert_allclose(plan, ref, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), ref.sum(0), rtol=1e-7, atol=1e-12)
    # the relaxation is active: the columns are between the prior and the prior-free masses
    free = torch.softmax(lam * x, 1).mean(0).numpy()
    assert np.abs(plan.sum(0) - r.numpy()).sum() > 1e-3
    assert np.abs(plan.sum(0) - r.numpy()).sum() < np.abs(free - r.numpy()).sum()


def test_tau_infinite_is_balanced():
    x, r = problem(50, 4, 3), make_prior("zipf", 4)
    bal = solve(x, r, None)
    inf = solve(x, r, math.inf)
    assert torch.equal(bal.plan, inf.plan) and bal.n_iter == inf.n_iter
    big = solve(x, r, 1e7)
    np.testing.assert_allclose(big.plan.sum(0).numpy(), r.numpy(), atol=1e-6)
    np.testing.assert_allclose(big.plan.numpy(), bal.plan.numpy(), atol=1e-7)


def test_tau_zero_is_the_prior_free_softmax():
    x, r = problem(60, 5, 4), make_prior("zipf", 5)
    res = solve(x, r, 0.0)
    soft = torch.softmax(5.0 * x, 1) / 60
    np.testing.assert_allclose(res.plan.numpy(), soft.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.plan.sum(0).numpy(), soft.sum(0).numpy(), rtol=1e-12)
    assert res.n_iter <= 2  # the fixed point is reached in one update


def test_column_masses_move_monotonically_towards_the_prior():
    x, r = problem(80, 4, 5, scale=2.0), make_prior("zipf", 4)
    dists = [float((solve(x, r, t).plan.sum(0) - r).abs().sum()) for t in (0.0, 0.05, 0.5, 5.0, None)]
    assert all(a > b for a, b in zip(dists, dists[1:])), dists
    assert dists[-1] < 1e-9


@settings(max_examples=40)
@given(n=st.integers(3, 40), k=st.integers(2, 6), seed=st.integers(0, 10_000),
       log_tau=st.floats(-3, 3), lam=st.floats(1.0, 50.0),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_rows_sum_to_one_over_n(n, k, seed, log_tau, lam, dtype):
    k = min(k, n)
    x = problem(n, k, seed, scale=2.0).to(dtype)
    res = sinkhorn(x, lam=lam, prior=make_prior("zipf", k), tau=10.0 ** log_tau, dtype=dtype,
                   return_plan=True, max_iter=3000)
    rows = res.plan.double().sum(1)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(rows.numpy(), np.full(n, 1.0 / n), rtol=rtol)
    assert bool(torch.isfinite(res.log_v).all())


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_anderson_accelerates_the_damped_update(tau):
    # regression: an uncentred residual made every accelerated step a rejected one
    # (20000 x 100, lam 20, tau 1: 81 passes with Anderson against 67 plain)
    x = problem(3000, 40, 6, scale=2.0).float()
    r = make_prior("zipf", 40)
    kw = dict(lam=20.0, prior=r, tau=tau, tol=1e-6, max_iter=3000, dtype=F64)
    plain = sinkhorn(x, anderson=0, **kw)
    acc = sinkhorn(x, anderson=5, **kw)
    assert bool(plain.converged) and bool(acc.converged)
    assert acc.n_iter * 2 <= plain.n_iter, (acc.n_iter, plain.n_iter)
    diff = (acc.log_v - acc.log_v.mean()) - (plain.log_v - plain.log_v.mean())
    assert float(diff.abs().max()) < 1e-3


def test_warm_start_and_multi_head():
    x = torch.stack([problem(200, 6, s) for s in range(3)])
    r = make_prior("zipf", 6, n_heads=3)
    cold = sinkhorn(x, prior=r, tau=0.5, tol=1e-8, dtype=F64)
    warm = sinkhorn(x, prior=r, tau=0.5, tol=1e-8, dtype=F64, warm_start=cold)
    assert warm.n_iter < cold.n_iter
    assert torch.equal(warm.labels, cold.labels)
    for h in range(3):
        one = sinkhorn(x[h], prior=r[h], tau=0.5, tol=1e-8, dtype=F64)
        assert torch.equal(one.labels, cold.labels[h])


def test_feature_path_matches_dense():
    g = torch.Generator().manual_seed(7)
    f, w, b = torch.randn(300, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(5, generator=g)
    r = make_prior("zipf", 5)
    dense = sinkhorn(torch.log_softmax(f @ w.T + b, 1), prior=r, tau=0.3, tol=1e-9, dtype=F64)
    feat = sinkhorn_features(f, w, b, prior=r, tau=0.3, tol=1e-9, dtype=F64, block_rows=64)
    assert torch.equal(dense.labels, feat.labels)
    np.testing.assert_allclose(dense.log_v - dense.log_v.mean(), feat.log_v - feat.log_v.mean(),
                               atol=1e-5)


def test_labeler_passes_tau():
    x = problem(300, 5, 8).float()
    lab = SinkhornLabeler(5, prior="zipf", tau=0.2, permute_prior=False).fit(x)
    ref = sinkhorn(x, prior=make_prior("zipf", 5), permute_prior=False, tau=0.2)
    assert torch.equal(lab.labels_, ref.labels)
    assert float((lab.result_.log_v - ref.log_v).abs().max()) < 1e-6


@pytest.mark.parametrize("bad, err", [(-1.0, ValueError), (float("nan"), ValueError),
                                      ("big", TypeError), (True, TypeError)])
def test_bad_tau_is_refused_naming_it(bad, err):
    with pytest.raises(err, match="tau"):
        sinkhorn(problem(10, 3, 0), tau=bad)
