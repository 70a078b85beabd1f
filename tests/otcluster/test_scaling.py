"""λ-scaling of the solver (``scaling_stages``): the same problem and solution as a solve at
``lam`` alone, in fewer passes where the plan is nearly a hard assignment; POT as an independent
reference; the budget, the feature path, the labeler (the trainer and the recipe key:
tests/otcluster_video/test_config.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otcluster import SinkhornLabeler, TrainerConfig, make_prior, sinkhorn, sinkhorn_features

pytestmark = pytest.mark.usefixtures("serial_numba")

F64 = torch.float64


def confident(n: int, k: int, seed: int, sharpness: float = 15.0) -> torch.Tensor:
    """Log-probabilities of a confident network that favours some clusters for every sample."""
    g = torch.Generator().manual_seed(seed)
    x = sharpness * torch.randn(n, k, generator=g) + 6.0 * torch.randn(1, k, generator=g)
    return x.log_softmax(-1)


@pytest.mark.parametrize("stages", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stages_reach_the_plan_of_a_solve_at_lam(stages, seed):
    x = confident(60, 5, seed).double()
    kw = {"lam": 20.0, "prior": "gaussian", "tol": 1e-9, "max_iter": 200_000, "dtype": F64,
          "return_plan": True}
    plain = sinkhorn(x, **kw)
    staged = sinkhorn(x, scaling_stages=stages, **kw)
    assert bool(plain.converged) and bool(staged.converged)
    assert torch.equal(staged.prior, plain.prior)  # sorted at lam, as without stages
    torch.testing.assert_close(staged.plan, plain.plan, rtol=0, atol=1e-7)
    torch.testing.assert_close(staged.plan.sum(1), torch.full((60,), 1 / 60, dtype=F64),
                               rtol=0, atol=1e-12)
    assert torch.equal(staged.labels, plain.labels)


def test_stages_agree_with_pot_at_lam():
    ot = pytest.importorskip("ot")
    x = confident(40, 4, 3).double()
    r = make_prior("zipf", 4).double()
    res = sinkhorn(x, lam=10.0, prior=r, permute_prior=False, tol=1e-10, max_iter=100_000,
                   dtype=F64, return_plan=True, scaling_stages=3)
    ref = ot.sinkhorn(torch.full((40,), 1 / 40, dtype=F64), r, -x, reg=0.1, method="sinkhorn_log",
                      numItermax=200_000, stopThr=1e-12)
    torch.testing.assert_close(res.plan, ref, rtol=0, atol=1e-8)


def test_stages_need_far_fewer_passes_on_nearly_hard_plans():
    plain = staged = 0
    for seed in range(8):
        x = confident(96, 6, seed)
        a = sinkhorn(x, lam=20.0, prior="gaussian", tol=1e-2, max_iter=20_000)
        b = sinkhorn(x, lam=20.0, prior="gaussian", tol=1e-2, max_iter=20_000, scaling_stages=2)
        assert bool(a.converged) and bool(b.converged) and float(b.error) <= 1e-2
        assert (a.labels == b.labels).double().mean() >= 0.95  # the same problem, within tol
        plain, staged = plain + a.n_iter, staged + b.n_iter
    assert staged * 3 < plain, (staged, plain)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not reach tol")
@settings(max_examples=40, deadline=None)
@given(n=st.integers(8, 80), k=st.integers(2, 8), seed=st.integers(0, 10_000),
       lam=st.floats(1.0, 60.0), stages=st.integers(0, 5),
       prior=st.sampled_from(["uniform", "gaussian", "zipf"]), heads=st.integers(1, 3))
def test_staged_solves_report_what_their_plan_is(n, k, seed, lam, stages, prior, heads):
    """Whatever the stages: rows of the plan sum to 1/N, the reported error is the plan's
    column error, ``converged`` means within tol, the budget holds, the prior is the one a
    solve at lam sorts."""
    k = min(k, n)
    x = torch.stack([confident(n, k, seed + h, sharpness=5.0) for h in range(heads)]).double()
    res = sinkhorn(x, lam=lam, prior=prior, tol=1e-6, max_iter=3000, dtype=F64,
                   return_plan=True, scaling_stages=stages)
    ref = sinkhorn(x, lam=lam, prior=prior, max_iter=1, dtype=F64)
    assert torch.equal(res.prior, ref.prior) and res.n_iter <= 3000
    torch.testing.assert_close(res.plan.sum(-1), torch.full((heads, n), 1 / n, dtype=F64),
                               rtol=0, atol=1e-10)
    col_err = (res.plan.sum(-2) - res.prior).abs().sum(-1) / res.prior.sum(-1)
    torch.testing.assert_close(col_err, res.error, rtol=1e-6, atol=1e-9)
    assert torch.equal(res.converged, res.error <= 1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_staged_solves_converge_where_plain_ones_do(seed):
    x = torch.stack([confident(64, 6, seed + h, sharpness=8.0) for h in range(3)]).double()
    kw = {"lam": 20.0, "prior": "gaussian", "tol": 1e-6, "max_iter": 20_000, "dtype": F64}
    plain = sinkhorn(x, **kw)
    assert bool(plain.converged.all())
    staged = sinkhorn(x, scaling_stages=3, **kw)
    assert bool(staged.converged.all())
    assert (staged.labels == plain.labels).double().mean() >= 0.97


def test_a_head_stuck_at_a_stage_leaves_passes_to_the_others():
    """2 heads, N=8, K=2, uniform prior: head 0 (every sample prefers cluster 1) is slow at
    every lam; head 1 needs about 220 passes. Each stage gets a share of the budget only."""
    x = torch.stack([confident(8, 2, 190 + h, sharpness=5.0) for h in range(2)]).double()
    res = sinkhorn(x, lam=16.0, prior="uniform", tol=1e-6, max_iter=5000, dtype=F64,
                   scaling_stages=1)
    assert bool(res.converged[1]) and res.n_iter <= 5000


def test_max_iter_caps_the_passes_of_all_stages():
    x = confident(96, 6, 1)
    with pytest.warns(UserWarning, match="did not reach tol"):
        res = sinkhorn(x, lam=20.0, prior="gaussian", tol=1e-12, max_iter=7, scaling_stages=3)
    assert res.n_iter <= 7
    with pytest.warns(UserWarning, match="did not reach tol"):
        one = sinkhorn(x, lam=20.0, tol=1e-2, max_iter=1, scaling_stages=4)
    assert one.n_iter == 1 and one.labels.shape == (96,)


def test_feature_path_and_semi_relaxed_columns_take_stages():
    g = torch.Generator().manual_seed(0)
    feats, w = 3 * torch.randn(200, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    b = torch.randn(2, 5, generator=g)
    x = torch.log_softmax(torch.einsum("nd,hkd->hnk", feats, w) + b[:, None], -1)
    for tau in (None, 1.0):
        dense = sinkhorn(x, lam=20.0, prior="gaussian", tol=1e-6, max_iter=20_000, dtype=F64,
                         tau=tau, scaling_stages=2)
        plain = sinkhorn(x, lam=20.0, prior="gaussian", tol=1e-6, max_iter=20_000, dtype=F64,
                         tau=tau)
        fused = sinkhorn_features(feats, w, b, lam=20.0, prior="gaussian", tol=1e-6,
                                  max_iter=20_000, dtype=F64, tau=tau, scaling_stages=2,
                                  block_rows=64)
        assert bool(dense.converged.all()) and bool(fused.converged.all())
        torch.testing.assert_close(dense.log_v, plain.log_v, rtol=1e-3, atol=1e-3)
        assert (dense.labels == fused.labels).double().mean() >= 0.99
        assert (dense.labels == plain.labels).double().mean() >= 0.99


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_stage_counts_are_refused_by_name(bad):
    x = confident(20, 3, 0)
    with pytest.raises(ValueError, match="scaling_stages must be a non-negative integer"):
        sinkhorn(x, scaling_stages=bad)
    with pytest.raises(ValueError, match="sinkhorn_scaling_stages"):
        TrainerConfig(sinkhorn_scaling_stages=bad).validate()


def test_labeler_passes_the_stages_on():
    x = torch.stack([confident(96, 6, s) for s in range(3)])
    plain = SinkhornLabeler(6, prior="gaussian", n_heads=3, tol=1e-2, max_iter=20_000,
                            random_state=0).fit(x)
    staged = SinkhornLabeler(6, prior="gaussian", n_heads=3, tol=1e-2, max_iter=20_000,
                             random_state=0, scaling_stages=2).fit(x)
    assert staged.n_iter_ * 2 < plain.n_iter_
    assert (staged.labels_ == plain.labels_).double().mean() >= 0.95
