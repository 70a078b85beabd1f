"""Tests of cluster priors: ``make_prior`` kinds, ``sort_prior``, and the direction of the prior
permutation inside the solver (paper eq. 4; the public SeLaVi code does it backwards: it sets
``r = 1 / sorted sizes``, so the most popular cluster got the *smallest* share).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otcluster import SinkhornLabeler, make_prior, sinkhorn, sort_prior

# small problems: numba's thread pool would dominate (see conftest.serial_numba)
pytestmark = pytest.mark.usefixtures("serial_numba")

F64 = torch.float64


# --- make_prior ------------------------------------------------------------------------------------

@pytest.mark.parametrize("heads", [None, 1, 4])
@pytest.mark.parametrize("kind", ["uniform", "gaussian", "zipf"])
def test_make_prior_shape_dtype_and_normalisation(kind, heads):
    p = make_prior(kind, 7, n_heads=heads, seed=0)
    assert p.shape == ((7,) if heads is None else (heads, 7))
    assert p.dtype == F64
    assert (p > 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(p.shape[:-1], dtype=F64), rtol=0, atol=1e-12)


def test_uniform_prior_is_one_over_k():
    assert torch.equal(make_prior("uniform", 4), torch.full((4,), 0.25, dtype=F64))
    assert torch.equal(make_prior("uniform", 3, n_heads=2), torch.full((2, 3), 1 / 3, dtype=F64))


@pytest.mark.parametrize("s", [0.0, 0.5, 1.0, 2.0, 3.7])
def test_zipf_prior_is_proportional_to_rank_power(s):
    k = 9
    p = make_prior("zipf", k, exponent=s)
    ranks = torch.arange(1, k + 1, dtype=F64)
    # p_k / p_1 = k^-s, largest first
    assert torch.allclose(p / p[0], ranks ** (-s), rtol=1e-12, atol=0)
    if s > 0:
        assert bool((p[1:] < p[:-1]).all())
    else:
        assert torch.allclose(p, torch.full((k,), 1 / k, dtype=F64), rtol=0, atol=1e-15)
    heads = make_prior("zipf", k, exponent=s, n_heads=3)
    assert all(torch.equal(heads[h], p) for h in range(3))  # deterministic: same for every head


def test_zipf_known_values():
    p = make_prior("zipf", 4, exponent=1.0)  # 1, 1/2, 1/3, 1/4 normalised by 25/12
    assert torch.allclose(p, torch.tensor([12, 6, 4, 3], dtype=F64) / 25, rtol=1e-14, atol=0)


def test_gaussian_prior_is_seeded_and_reproducible():
    a = make_prior("gaussian", 30, seed=7)
    b = make_prior("gaussian", 30, seed=7)
    c = make_prior("gaussian", 30, seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # a private generator: the global torch RNG is neither used nor advanced
    state = torch.get_rng_state()
    make_prior("gaussian", 30, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    # without a seed, successive draws differ
    assert not torch.equal(make_prior("gaussian", 30), make_prior("gaussian", 30))


def test_gaussian_prior_draws_each_head_independently():
    p = make_prior("gaussian", 25, n_heads=4, seed=3)
    for i, j in itertools.combinations(range(4), 2):
        assert not torch.allclose(p[i], p[j])
    # head 0 of a multi-head draw is not tied to the single-head draw's values either way, but the
    # draw is reproducible per seed
    assert torch.equal(p, make_prior("gaussian", 25, n_heads=4, seed=3))


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_gaussian_prior_sizes_follow_n_one_sigma(sigma):
    # cluster sizes N(1, sigma) * N/K  =>  K * p_k has mean 1 and standard deviation ~sigma
    k = 20_000
    p = make_prior("gaussian", k, sigma=sigma, seed=0)
    sizes = p * k
    assert float(sizes.mean()) == pytest.approx(1.0, abs=1e-9)
    assert float(sizes.std()) == pytest.approx(sigma, rel=0.05)


def test_gaussian_prior_sigma_zero_is_uniform():
    assert torch.allclose(make_prior("gaussian", 6, sigma=0.0, seed=1), torch.full((6,), 1 / 6, dtype=F64),
                          rtol=0, atol=1e-15)


def test_gaussian_prior_is_clipped_positive():
    # with a huge spread about 40% of the raw draws are below the 0.05 clip
    p = make_prior("gaussian", 200, sigma=5.0, seed=0)
    assert (p > 0).all()
    smallest = p.min()
    n_clipped = int((p == smallest).sum())
    assert n_clipped > 40  # many entries sit exactly at the clip value
    assert torch.allclose(p.sum(), torch.tensor(1.0, dtype=F64))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kind="pareto", n_clusters=4), "prior kind"),
        (dict(kind=3, n_clusters=4), "prior kind"),
        (dict(kind="zipf", n_clusters=1), "n_clusters"),
        (dict(kind="zipf", n_clusters=2.5), "n_clusters"),
        (dict(kind="uniform", n_clusters=4, n_heads=0), "n_heads"),
        (dict(kind="gaussian", n_clusters=4, sigma=-0.1), "sigma"),
        (dict(kind="gaussian", n_clusters=4, sigma=float("nan")), "sigma"),
        (dict(kind="zipf", n_clusters=4, exponent=-1.0), "exponent"),
        (dict(kind="zipf", n_clusters=4, exponent=float("inf")), "exponent"),
    ],
)
def test_make_prior_errors(kwargs, match):
    kind = kwargs.pop("kind")
    with pytest.raises(ValueError, match=match):
        make_prior(kind, **kwargs)


# --- sort_prior ------------------------------------------------------------------------------------

def test_sort_prior_hand_example():
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    mass = torch.tensor([0.1, 0.7, 0.2], dtype=F64)
    # largest mass (cluster 1) gets 0.5, then cluster 2 gets 0.3, the smallest (cluster 0) gets 0.2
    assert sort_prior(prior, mass).tolist() == [0.2, 0.5, 0.3]
    assert sort_prior(prior, -mass).tolist() == [0.5, 0.2, 0.3]


distinct_vectors = st.integers(2, 6).flatmap(
    lambda k: st.tuples(
        st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k, unique=True),
        st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k, unique=True),
    )
)


@settings(max_examples=50, deadline=None)
@given(distinct_vectors)
def test_sort_prior_follows_mass_ranks_and_maximises_alignment(vectors):
    w, m = vectors
    prior = torch.tensor(w, dtype=F64) / sum(w)
    mass = torch.tensor(m, dtype=F64)
    out = sort_prior(prior, mass)
    # a permutation of the prior ...
    assert torch.equal(out.sort().values, prior.sort().values)
    # ... whose ranks are the ranks of the mass (the k-th largest mass gets the k-th largest value)
    assert torch.equal(torch.argsort(out), torch.argsort(mass))
    # ... which is the best permutation (rearrangement inequality): brute force over all of them
    best = max(float((prior[list(p)] * mass).sum()) for p in itertools.permutations(range(len(w))))
    assert float((out * mass).sum()) == pytest.approx(best, rel=1e-12, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_sort_prior_batched_equals_rowwise_and_leaves_inputs(heads, k, seed):
    g = torch.Generator().manual_seed(seed)
    prior = torch.rand(heads, k, generator=g, dtype=F64) + 0.1
    prior = prior / prior.sum(1, keepdim=True)
    mass = torch.rand(heads, k, generator=g, dtype=torch.float32)
    keep_p, keep_m = prior.clone(), mass.clone()
    out = sort_prior(prior, mass)
    assert out.dtype == F64 and out.shape == (heads, k)
    for h in range(heads):
        assert torch.equal(out[h], sort_prior(prior[h], mass[h]))
    assert torch.equal(prior, keep_p) and torch.equal(mass, keep_m)


def test_sort_prior_with_tied_masses_is_a_deterministic_permutation():
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64)
    mass = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=F64)
    out = sort_prior(prior, mass)
    assert torch.equal(out.sort().values, prior.sort().values)
    assert torch.equal(out, sort_prior(prior, mass))


# --- the permutation inside the solver ---------------------------------------------------------------

# popularity order of the clusters, most popular first: cluster 3, then 1, 5, 0, 4, 2
ORDER = [3, 1, 5, 0, 4, 2]


def popular_logits(n: int, order: list[int], seed: int, gap: float = 0.5) -> torch.Tensor:
    """log-softmax of N(0,1) logits plus a bias that makes ``order[0]`` the most popular cluster."""
    k = len(order)
    g = torch.Generator().manual_seed(seed)
    bias = torch.empty(k, dtype=F64)
    bias[torch.tensor(order)] = gap * torch.arange(k - 1, -1, -1, dtype=F64)
    return (torch.randn(n, k, generator=g, dtype=F64) + bias).log_softmax(1)


def expected_sorted(prior: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The k-th most popular cluster gets the k-th largest prior value."""
    out = torch.empty_like(prior)
    out[torch.tensor(order)] = prior.sort(descending=True).values
    return out


def _check_direction(res, prior, order, lam, x, tol, *, counts_follow=True):
    want = expected_sorted(prior, order)
    # sanity of the data: argmax counts and the solver's initial mass rank the clusters as ORDER
    counts = torch.bincount(x.argmax(1), minlength=len(order))
    assert torch.argsort(counts, descending=True).tolist() == order
    mass0 = torch.softmax(lam * x, 1).mean(0)
    assert torch.argsort(mass0, descending=True).tolist() == order
    assert torch.allclose(res.prior, want, rtol=0, atol=1e-12)
    col = res.plan.double().sum(0)
    assert float((col - want).abs().sum()) <= tol + 1e-9
    assert torch.argsort(col, descending=True).tolist() == order  # the most popular gets the most
    if counts_follow:  # hard labels follow the plan's shares when the prior values are well apart
        labels = torch.bincount(res.labels, minlength=len(order))
        assert int(labels.argmax()) == order[0]
        assert int(labels.argmin()) == order[-1]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_zipf_prior_goes_to_the_most_popular_cluster(dtype):
    x = popular_logits(3000, ORDER, 0)
    prior = make_prior("zipf", 6, exponent=1.0)
    res = sinkhorn(x.to(dtype), prior=prior, permute_prior=True, dtype=dtype, tol=1e-4,
                   return_plan=True)
    _check_direction(res, prior, ORDER, 20.0, x, 1e-4 + (3e-5 if dtype == torch.float32 else 0))
    # the inverted assignment of the public code would give cluster 3 the smallest share
    assert float(res.plan.double().sum(0)[3]) == pytest.approx(float(prior.max()), abs=1e-3)


def test_zipf_prior_given_as_a_string_is_sorted_the_same_way():
    x = popular_logits(3000, ORDER, 1)
    res = sinkhorn(x, prior="zipf", dtype=F64, tol=1e-5, return_plan=True)
    _check_direction(res, make_prior("zipf", 6), ORDER, 20.0, x, 1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_prior_goes_to_the_most_popular_cluster(seed):
    x = popular_logits(3000, ORDER, seed + 10)
    prior = make_prior("gaussian", 6, sigma=0.3, seed=seed)
    assert len(set(prior.tolist())) == 6  # distinct values: the assignment is unambiguous
    res = sinkhorn(x, prior=prior, permute_prior=True, dtype=F64, tol=1e-5, return_plan=True)
    # Gaussian values can be close (0.19 vs 0.18): argmax counts need not rank like the shares
    _check_direction(res, prior, ORDER, 20.0, x, 1e-5, counts_follow=False)


def test_batched_heads_sort_their_own_priors():
    orders = [ORDER, [0, 2, 4, 1, 3, 5]]
    x = torch.stack([popular_logits(2000, o, 20 + h) for h, o in enumerate(orders)])
    prior = torch.stack([make_prior("zipf", 6), make_prior("gaussian", 6, sigma=0.3, seed=4)])
    res = sinkhorn(x, prior=prior, permute_prior=True, dtype=F64, tol=1e-5, return_plan=True)
    for h, order in enumerate(orders):
        want = expected_sorted(prior[h], order)
        assert torch.allclose(res.prior[h], want, rtol=0, atol=1e-12)
        assert float((res.plan[h].sum(0) - want).abs().sum()) <= 1e-5 + 1e-9


def test_permute_prior_false_keeps_the_given_order():
    x = popular_logits(3000, ORDER, 2)
    prior = make_prior("zipf", 6)  # cluster 0 gets the largest share, cluster 3 only the 1/4 one
    res = sinkhorn(x, prior=prior, permute_prior=False, dtype=F64, tol=1e-5, return_plan=True)
    assert torch.allclose(res.prior, prior, rtol=0, atol=1e-15)
    col = res.plan.sum(0)
    assert float((col - prior).abs().sum()) <= 1e-5 + 1e-9
    assert int(col.argmax()) == 0 and int(torch.bincount(res.labels, minlength=6).argmax()) == 0


def test_labeler_sorts_the_prior_the_same_way():
    x = popular_logits(2000, ORDER, 3)
    lab = SinkhornLabeler(6, prior="zipf", tol=1e-5, dtype=F64).fit(x)
    assert torch.allclose(lab.result_.prior, expected_sorted(lab.prior_, ORDER), rtol=0, atol=1e-12)
    assert int(torch.bincount(lab.labels_, minlength=6).argmax()) == ORDER[0]
    np.testing.assert_allclose(lab.prior_.numpy(), make_prior("zipf", 6).numpy(), rtol=0, atol=1e-15)


# --- the default of permute_prior (issue 12 item 14) -------------------------------------------------

def test_an_explicit_prior_vector_keeps_its_order_by_default():
    """[.3, .2, .2, .1, .1, .1] came back as column sums [.2, .1, .1, .3, .1, .2]."""
    x = popular_logits(3000, ORDER, 5)
    given = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.1], dtype=F64)
    for res in (sinkhorn(x, prior=given, dtype=F64, tol=1e-6, return_plan=True),
                sinkhorn(x, prior=given.tolist(), dtype=F64, tol=1e-6, return_plan=True)):
        assert torch.allclose(res.prior, given, rtol=0, atol=1e-15)
        assert torch.allclose(res.plan.sum(0), given, rtol=0, atol=1e-5)
    lab = SinkhornLabeler(6, prior=given.tolist(), dtype=F64, tol=1e-6).fit(x)
    assert torch.allclose(lab.result_.prior, given, rtol=0, atol=1e-15)
    # asked for: sorted onto the clusters by mass (eq. 4)
    res = sinkhorn(x, prior=given, permute_prior=True, dtype=F64, tol=1e-6)
    assert torch.allclose(res.prior, expected_sorted(given, ORDER), rtol=0, atol=1e-12)
    lab = SinkhornLabeler(6, prior=given.tolist(), permute_prior=True, dtype=F64, tol=1e-6).fit(x)
    assert torch.allclose(lab.result_.prior, expected_sorted(given, ORDER), rtol=0, atol=1e-12)


def test_a_named_prior_is_sorted_by_default():
    x = popular_logits(3000, ORDER, 6)
    zipf = make_prior("zipf", 6)
    res = sinkhorn(x, prior="zipf", dtype=F64, tol=1e-6)
    assert torch.allclose(res.prior, expected_sorted(zipf, ORDER), rtol=0, atol=1e-12)
    lab = SinkhornLabeler(6, prior="zipf", dtype=F64, tol=1e-6).fit(x)
    assert torch.allclose(lab.result_.prior, expected_sorted(zipf, ORDER), rtol=0, atol=1e-12)
    kept = sinkhorn(x, prior="zipf", permute_prior=False, dtype=F64, tol=1e-6)
    assert torch.allclose(kept.prior, zipf, rtol=0, atol=1e-15)
