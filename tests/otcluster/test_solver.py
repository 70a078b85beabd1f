"""Core solver: invariants (hypothesis), agreement with POT, prior direction, stable path, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otcluster import SinkhornLabeler, make_prior, sinkhorn, sinkhorn_features, sort_prior

SETTINGS = settings(max_examples=15, deadline=None)


def _logp(n, k, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, k, generator=g, dtype=torch.float64)).log_softmax(1)


problems = st.tuples(
    st.integers(20, 300), st.integers(2, 12), st.integers(0, 10_000), st.floats(0.3, 3.0)
)
# well-conditioned problems (lam * logit scale <= 20): Sinkhorn converges to tight tolerances
moderate = st.tuples(
    st.integers(20, 300), st.integers(2, 12), st.integers(0, 10_000), st.floats(0.3, 1.0)
)


@SETTINGS
@given(problems, st.sampled_from([5.0, 20.0, 50.0]))
def test_marginals_hold(p, lam):
    n, k, seed, scale = p
    x = _logp(n, k, seed, scale)
    res = sinkhorn(x, lam=lam, tol=1e-4, return_plan=True, dtype=torch.float64, max_iter=3000)
    plan = res.plan
    # rows are exact after every pass; the reported error is the plan's true column error
    assert torch.allclose(plan.sum(1), torch.full((n,), 1.0 / n, dtype=plan.dtype), rtol=1e-9, atol=0)
    col_err = float((plan.sum(0) - res.prior).abs().sum() / res.prior.sum())
    assert col_err == pytest.approx(float(res.error), rel=1e-6, abs=1e-12)
    assert bool(res.converged) == (col_err <= 1e-4)
    assert torch.equal(res.labels, plan.argmax(1))
    if lam * scale <= 20:  # well-conditioned: must converge (near-hard assignments may not)
        assert bool(res.converged), col_err


@SETTINGS
@given(moderate)
def test_invariant_to_row_constants(p):
    n, k, seed, scale = p
    x = _logp(n, k, seed, scale)
    shift = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 5
    a = sinkhorn(x, return_plan=True, dtype=torch.float64, tol=1e-8)
    b = sinkhorn(x + shift, return_plan=True, dtype=torch.float64, tol=1e-8)
    clear = _clear_rows(a, 1e-4)
    assert torch.equal(a.labels[clear], b.labels[clear])
    assert float((a.plan - b.plan).abs().sum()) < 1e-6


@SETTINGS
@given(moderate)
def test_permuting_clusters_permutes_labels(p):
    n, k, seed, scale = p
    x = _logp(n, k, seed, scale)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed + 1))
    a = sinkhorn(x, dtype=torch.float64, tol=1e-8, return_plan=True)
    b = sinkhorn(x[:, perm], dtype=torch.float64, tol=1e-8)
    clear = _clear_rows(a, 1e-4)
    # column j of the permuted problem is column perm[j] of the original
    assert torch.equal(perm[b.labels][clear], a.labels[clear])
    # non-uniform prior given in the permuted order, no sorting: the same problem
    prior = make_prior("zipf", k)
    c = sinkhorn(x, prior=prior, permute_prior=False, dtype=torch.float64, tol=1e-8, return_plan=True)
    d = sinkhorn(x[:, perm], prior=prior[perm], permute_prior=False, dtype=torch.float64, tol=1e-8)
    clear = _clear_rows(c, 1e-4)
    assert torch.equal(perm[d.labels][clear], c.labels[clear])


def _clear_rows(res, margin=1e-3):
    """Rows whose best and second-best plan entries differ clearly (no numerical tie)."""
    top = torch.log(res.plan.double()).topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) > margin


@SETTINGS
@given(moderate)
def test_float32_float64_and_backends_agree(p):
    n, k, seed, scale = p
    x = _logp(n, k, seed, scale)
    r64 = sinkhorn(x, dtype=torch.float64, tol=1e-7, return_plan=True)
    r32 = sinkhorn(x.float(), tol=1e-7, return_plan=True, max_iter=5000)
    rt = sinkhorn(x.float(), tol=1e-7, backend="torch", max_iter=5000)
    clear = _clear_rows(r64, 1e-2)
    assert torch.equal(r32.labels[clear], r64.labels[clear])
    assert torch.equal(rt.labels[clear], r64.labels[clear])


def test_batched_heads_equal_single_solves():
    x = torch.stack([_logp(300, 7, s).float() for s in range(4)])
    res = sinkhorn(x, tol=1e-6)
    assert res.labels.shape == (4, 300) and res.converged.shape == (4,)
    assert bool(res.converged.all()) and bool((res.error <= 1e-6).all())
    for h in range(4):  # all heads iterate until the slowest converges: compare at tight tol
        single = sinkhorn(x[h], tol=1e-6)
        assert (single.labels == res.labels[h]).float().mean() >= 0.99


def test_features_path_equals_dense():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2000, 16, generator=g)
    w, b = torch.randn(3, 30, 16, generator=g), torch.randn(3, 30, generator=g)
    dense = sinkhorn(torch.log_softmax(torch.einsum("nd,hkd->hnk", f, w) + b[:, None], -1))
    mem = sinkhorn_features(f, w, b, block_rows=333)
    assert mem.plan is None
    assert (mem.labels == dense.labels).float().mean() > 0.999


def test_potentials_reconstruct_plan():
    x = _logp(500, 9, 3)
    res = sinkhorn(x, lam=20.0, dtype=torch.float64, return_plan=True, tol=1e-8)
    rebuilt = torch.exp(res.log_u[:, None] + 20.0 * x + res.log_v[None, :])
    assert torch.allclose(rebuilt, res.plan, rtol=1e-6, atol=1e-14)


def test_warm_start_needs_fewer_passes_and_input_untouched():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3000, 40, generator=g)
    x0 = logits.log_softmax(1)
    keep = x0.clone()
    first = sinkhorn(x0)
    assert torch.equal(x0, keep)  # never modified in place
    x1 = (logits + 0.01 * torch.randn(3000, 40, generator=g)).log_softmax(1)
    cold = sinkhorn(x1, anderson=0)
    warm = sinkhorn(x1, anderson=0, warm_start=first)
    assert warm.n_iter < cold.n_iter
    xn = x0.numpy().copy()
    sinkhorn(xn)
    assert np.array_equal(xn, keep.numpy())


@pytest.mark.parametrize("k,beta", [(5, 1e-2), (20, 0.0)])
def test_agrees_with_pot(k, beta):
    ot = pytest.importorskip("ot")
    n = 1500
    x = _logp(n, k, 11)
    if beta:
        prior = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(k)) * 0.8 + 0.2 / k)
    else:
        prior = torch.full((k,), 1.0 / k, dtype=torch.float64)
    a = np.full(n, 1.0 / n)
    plan_pot = ot.sinkhorn(a, prior.numpy(), -x.numpy(), reg=1.0 / 20.0, stopThr=1e-12, numItermax=100000)
    res = sinkhorn(x, prior=prior, permute_prior=False, dtype=torch.float64, tol=1e-9, return_plan=True)
    assert (res.labels.numpy() == plan_pot.argmax(1)).mean() >= 0.999
    rel = np.abs(res.plan.numpy() - plan_pot).sum() / plan_pot.sum()
    assert rel < 1e-5


def test_prior_direction_zipf_goes_to_most_popular_cluster():
    """The public SeLaVi code inverts this (r = 1/sorted prior); we give the most popular
    cluster the largest share and the column sums equal the sorted prior."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 6, generator=g)
    logits[:, 3] += 1.5  # cluster 3 is clearly the most popular
    logits[:, 1] += 0.7  # cluster 1 second
    prior = make_prior("zipf", 6, exponent=1.0)
    res = sinkhorn(logits.log_softmax(1), prior=prior, permute_prior=True, return_plan=True, tol=1e-5,
                   dtype=torch.float64)
    colsum = res.plan.sum(0)
    assert int(colsum.argmax()) == 3
    assert torch.argsort(colsum, descending=True)[:2].tolist() == [3, 1]
    assert torch.allclose(torch.sort(colsum).values, torch.sort(prior).values, atol=1e-4)
    counts = torch.bincount(res.labels, minlength=6)
    assert int(counts.argmax()) == 3 and counts[3] > 0.35 * 4000
    # without sorting the prior keeps its given order: cluster 0 gets the largest share
    fixed = sinkhorn(logits.log_softmax(1), prior=prior, permute_prior=False, return_plan=True, tol=1e-5)
    assert int(fixed.plan.sum(0).argmax()) == 0


def test_sort_prior_ranks_follow_mass():
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    mass = torch.tensor([0.1, 0.7, 0.2])
    out = sort_prior(prior, mass)
    assert out.tolist() == [0.2, 0.5, 0.3]


def test_gaussian_prior_is_seeded_positive_and_per_head():
    a = make_prior("gaussian", 50, n_heads=3, seed=1)
    b = make_prior("gaussian", 50, n_heads=3, seed=1)
    assert torch.equal(a, b) and (a > 0).all()
    assert torch.allclose(a.sum(1), torch.ones(3, dtype=torch.float64))
    assert not torch.equal(a[0], a[1])
    assert 0.03 < float((a * 50).std()) < 0.2  # sizes N(1, 0.1) * N/K


@pytest.mark.parametrize(
    "make,lam",
    [
        (lambda: _logp(2000, 30, 1).float(), 100.0),
        (lambda: _logp(2000, 30, 2).float() - 50.0 * torch.eye(30)[7], 100.0),
        (lambda: _logp(2000, 30, 3).float() - 1000.0 * torch.eye(30)[7], 20.0),
        (lambda: torch.cat([_logp(1999, 30, 4).float(), _logp(1, 30, 5).float() - 1e4]), 20.0),
        (lambda: _logp(300, 10, 6).float(), 1000.0),
    ],
    ids=["lam100", "unloved-column-50", "unloved-column-1000", "far-row", "lam1000"],
)
def test_stable_path_never_nan(make, lam):
    x = make()
    res = sinkhorn(x, lam=lam, return_plan=True, max_iter=5000)
    assert torch.isfinite(res.plan).all() and torch.isfinite(res.log_v).all()
    assert bool(res.converged), float(res.error)
    assert float((res.plan.double().sum(0) - res.prior).abs().sum()) <= 1e-3 + 1e-6


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda: torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), "non-finite"),
        (lambda: torch.tensor([[0.0, float("inf")], [0.0, 0.0]]), "non-finite"),
        (lambda: torch.zeros(3, 5), "more than N"),
        (lambda: torch.zeros(5, 1), "K=2"),
        (lambda: torch.zeros(0, 3), "N=0"),
        (lambda: torch.zeros(5), "2-D or 3-D"),
    ],
)
def test_bad_input_value_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(bad())


def test_bad_arguments():
    x = _logp(50, 4, 0)
    with pytest.raises(TypeError, match="floating"):
        sinkhorn(torch.zeros(10, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating"):
        sinkhorn(np.zeros((10, 3), dtype=bool))
    with pytest.raises(ValueError, match="lam"):
        sinkhorn(x, lam=0)
    with pytest.raises(ValueError, match="lam"):
        sinkhorn(x, lam=float("nan"))
    with pytest.raises(ValueError, match="length 3"):
        sinkhorn(x, prior=[0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="negative"):
        sinkhorn(x, prior=[1.5, -0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="sum to 1"):
        sinkhorn(x, prior=[0.3, 0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="non-finite"):
        sinkhorn(x, prior=[float("nan"), 0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="warm_start"):
        sinkhorn(x, warm_start=torch.zeros(7))
    with pytest.raises(ValueError, match="tol"):
        sinkhorn(x, tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        sinkhorn(x, max_iter=0)
    with pytest.raises(ValueError, match="prior kind"):
        make_prior("pareto", 4)


def test_labeler_views_heads_warm_start_and_errors():
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(800, 6, generator=g), torch.randn(800, 6, generator=g)
    lab = SinkhornLabeler(6, prior="gaussian", random_state=3)
    assert lab.fit({"audio": a, "video": v}) is lab
    manual = sinkhorn((a.log_softmax(1) + v.log_softmax(1)) / 2, prior=lab.prior_, permute_prior=True)
    assert torch.equal(lab.labels_, manual.labels)
    prior0 = lab.prior_.clone()
    first = lab.n_iter_
    lab.fit([a + 0.01, v])  # slowly changing outputs: warm start
    assert torch.equal(lab.prior_, prior0)  # the Gaussian prior is drawn once
    assert lab.n_iter_ <= first
    heads = SinkhornLabeler(6, n_heads=3).fit(torch.randn(3, 800, 6, generator=g))
    assert heads.labels_.shape == (3, 800)
    with pytest.raises(ValueError, match="same shape"):
        SinkhornLabeler(6).fit({"audio": a, "video": v[:700]})
    with pytest.raises(ValueError, match="n_heads=3"):
        SinkhornLabeler(6, n_heads=3).fit(a)


def test_convergence_warning():
    from otcluster import ConvergenceWarning

    with pytest.warns(ConvergenceWarning):
        res = sinkhorn(_logp(500, 10, 0), max_iter=1, anderson=0)
    assert not bool(res.converged)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x = _logp(4000, 50, 0).float()
    cpu = sinkhorn(x)
    gpu = sinkhorn(x.cuda())
    assert gpu.labels.device.type == "cuda"
    assert (gpu.labels.cpu() == cpu.labels).float().mean() > 0.999
