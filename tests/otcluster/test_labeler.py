"""Tests of ``SinkhornLabeler`` (the stateful wrapper), ``average_views`` and
``decorrelated_head_groups``."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otcluster import (
    SinkhornLabeler,
    SinkhornResult,
    average_views,
    decorrelated_head_groups,
    make_prior,
    sinkhorn,
)

# small problems: numba's thread pool would dominate (see conftest.serial_numba)
pytestmark = pytest.mark.usefixtures("serial_numba")

F64 = torch.float64


def logits(n: int, k: int, seed: int, *, heads: int | None = None, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn((n, k) if heads is None else (heads, n, k), generator=g)


def drift(x: torch.Tensor, seed: int, eps: float = 0.02) -> torch.Tensor:
    return x + eps * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


def same_solver_labels(lab: SinkhornLabeler, x: torch.Tensor) -> torch.Tensor:
    """What the labeler's first fit must equal: sinkhorn on the one array it was given (no
    log_softmax copy: per-row constants do not change the solution) with its fixed prior."""
    dtype = torch.float32 if lab.dtype == "auto" else lab.dtype  # "auto" tries float32 first
    labels = sinkhorn(x, lam=lab.lam, prior=lab.prior_, tol=lab.tol, max_iter=lab.max_iter,
                      dtype=dtype).labels
    normalised = sinkhorn(torch.log_softmax(x, -1), lam=lab.lam, prior=lab.prior_, tol=lab.tol,
                          max_iter=lab.max_iter, dtype=dtype).labels
    assert float((labels == normalised).double().mean()) >= 0.99  # the same up to rounding
    return labels


# --- fitting ---------------------------------------------------------------------------------------

def test_fit_returns_self_and_sets_learned_attributes():
    x = logits(300, 5, 0)
    lab = SinkhornLabeler(5)
    assert not hasattr(lab, "labels_")  # __init__ only stores parameters
    assert lab.fit(x) is lab
    assert lab.labels_.shape == (300,) and lab.labels_.dtype == torch.int64
    assert isinstance(lab.result_, SinkhornResult)
    assert lab.n_iter_ == lab.result_.n_iter >= 1
    assert torch.equal(lab.labels_, lab.result_.labels)
    assert torch.equal(lab.labels_, same_solver_labels(lab, x))
    assert lab.prior == "uniform" and lab.n_clusters == 5  # parameters untouched
    assert "SinkhornLabeler(n_clusters=5" in repr(lab)


def test_logits_and_log_probabilities_give_the_same_labels():
    x = logits(300, 6, 1)
    a = SinkhornLabeler(6, dtype=F64).fit(x)
    b = SinkhornLabeler(6, dtype=F64).fit(torch.log_softmax(x, 1))
    c = SinkhornLabeler(6, dtype=F64).fit(x.numpy())  # numpy input too
    assert torch.equal(a.labels_, b.labels_) and torch.equal(a.labels_, c.labels_)


def test_fit_heads():
    x = logits(200, 4, 2, heads=3)
    lab = SinkhornLabeler(4, n_heads=3, prior="gaussian", random_state=1).fit(x)
    assert lab.labels_.shape == (3, 200)
    assert lab.prior_.shape == (3, 4)
    ref = sinkhorn(x, prior=lab.prior_, permute_prior=True, tol=lab.tol)
    assert torch.equal(lab.labels_, ref.labels)
    ref = sinkhorn(torch.log_softmax(x, -1), prior=lab.prior_, permute_prior=True, tol=lab.tol)
    assert float((lab.labels_ == ref.labels).double().mean()) >= 0.99  # up to float32 rounding
    for h in range(3):  # each head sorts its own prior
        assert torch.allclose(lab.result_.prior[h].sort().values, lab.prior_[h].sort().values)


@pytest.mark.parametrize("container", ["list", "tuple", "dict"])
@pytest.mark.parametrize("heads", [None, 2])
def test_fit_views_averages_log_softmax(container, heads):
    views = [logits(250, 5, s, heads=heads) for s in (3, 4, 5)]
    keep = [v.clone() for v in views]
    manual = sum(torch.log_softmax(v, -1) for v in views) / 3
    data = {"list": views, "tuple": tuple(views),
            "dict": {"audio": views[0], "video": views[1], "flow": views[2]}}[container]
    avg = average_views(data)
    assert torch.allclose(avg, manual, rtol=0, atol=1e-6)
    lab = SinkhornLabeler(5, n_heads=heads or 1, dtype=F64).fit(data)
    ref = sinkhorn(manual, prior=lab.prior_, dtype=F64, tol=lab.tol)
    assert torch.equal(lab.labels_, ref.labels)
    assert all(torch.equal(v, w) for v, w in zip(views, keep))  # inputs untouched


def test_average_views_normalize_false_and_single_view():
    a, b = logits(50, 3, 6), logits(50, 3, 7)
    keep = a.clone(), b.clone()
    assert torch.allclose(average_views([a, b], normalize=False), (a + b) / 2, rtol=0, atol=1e-6)
    assert torch.equal(a, keep[0]) and torch.equal(b, keep[1])  # no in-place accumulation
    assert average_views(a, normalize=False) is a  # a single array is returned as is
    assert torch.allclose(average_views(a), torch.log_softmax(a, 1))
    assert torch.allclose(average_views([a]), torch.log_softmax(a, 1))
    np_avg = average_views([a.numpy(), b.numpy()])
    assert torch.allclose(np_avg, average_views([a, b]))


def test_average_views_holds_one_buffer_for_a_single_view():
    """A dense fit must not hold extra N x K copies: one log_softmax output, no clone of it."""
    from torch.profiler import ProfilerActivity, profile

    x = logits(4000, 50, 21)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = average_views(x)
    allocated = sum(e.cpu_memory_usage for e in prof.events()
                    if e.cpu_memory_usage > 0 and e.cpu_parent is None)
    buffer = x.numel() * x.element_size()
    assert buffer <= allocated < 1.5 * buffer
    assert torch.allclose(out, torch.log_softmax(x, 1), rtol=0, atol=0)


def test_fit_predict_equals_fit_labels():
    x = logits(300, 5, 8)
    got = SinkhornLabeler(5, prior="zipf").fit_predict(x)
    assert torch.equal(got, SinkhornLabeler(5, prior="zipf").fit(x).labels_)


# --- state across calls ------------------------------------------------------------------------------

def test_warm_start_across_calls_reduces_iterations():
    x0 = logits(300, 6, 9)
    x1 = drift(x0, 10)
    kw = dict(tol=1e-4, anderson=0)
    lab = SinkhornLabeler(6, **kw).fit(x0)
    lab.fit(x1)
    cold = SinkhornLabeler(6, **kw).fit(x1)
    assert lab.n_iter_ < cold.n_iter_
    clear = (lab.labels_ == cold.labels_).double().mean()
    assert float(clear) >= 0.99  # the same problem, solved from a better start
    # without warm starts (or after reset) a second call costs as much as a cold one
    no_warm = SinkhornLabeler(6, warm_start=False, **kw).fit(x0).fit(x1)
    assert no_warm.n_iter_ == cold.n_iter_ and torch.equal(no_warm.labels_, cold.labels_)
    reset = SinkhornLabeler(6, **kw).fit(x0).reset().fit(x1)
    assert reset.n_iter_ == cold.n_iter_


def test_warm_start_works_for_one_head_given_as_a_batch():
    """(1, N, K) input with n_heads=1: the prior is (K,) and the potentials (1, K); the warm
    start must still be used (it was silently dropped when the shapes were compared)."""
    x0 = logits(300, 6, 9).unsqueeze(0)
    x1 = drift(x0, 10)
    kw = dict(tol=1e-4, anderson=0)
    lab = SinkhornLabeler(6, **kw).fit(x0).fit(x1)
    cold = SinkhornLabeler(6, **kw).fit(x1)
    assert lab.labels_.shape == (1, 300)
    assert lab.n_iter_ < cold.n_iter_
    # and the other way round: warm potentials from a 2-D fit feed a (1, N, K) fit
    lab2 = SinkhornLabeler(6, **kw).fit(x0[0]).fit(x1)
    assert lab2.n_iter_ == lab.n_iter_ and torch.equal(lab2.labels_, lab.labels_)


def test_loading_a_state_without_potentials_drops_the_old_warm_start():
    x0 = logits(300, 6, 9)
    x1 = drift(x0, 10)
    kw = dict(tol=1e-4, anderson=0)
    cold = SinkhornLabeler(6, **kw).fit(x1)
    lab = SinkhornLabeler(6, **kw).fit(x0)
    lab.load_state_dict({"prior": lab.prior_, "log_v": None})
    assert lab.state_dict()["log_v"] is None
    assert lab.fit(x1).n_iter_ == cold.n_iter_ and torch.equal(lab.labels_, cold.labels_)


def test_gaussian_prior_is_drawn_once_and_seeded():
    x0, x1 = logits(400, 8, 11), logits(400, 8, 12)
    lab = SinkhornLabeler(8, prior="gaussian", random_state=5, sigma=0.2).fit(x0)
    drawn = lab.prior_.clone()
    assert torch.equal(drawn, make_prior("gaussian", 8, sigma=0.2, seed=5))
    lab.fit(x1)
    lab.fit(torch.flip(x0, [1]))
    assert torch.equal(lab.prior_, drawn)  # kept across calls (only its permutation changes)
    assert torch.allclose(lab.result_.prior.sort().values, drawn.sort().values, rtol=0, atol=1e-15)
    same = SinkhornLabeler(8, prior="gaussian", random_state=5, sigma=0.2).fit(x1)
    other = SinkhornLabeler(8, prior="gaussian", random_state=6, sigma=0.2).fit(x1)
    assert torch.equal(same.prior_, drawn)
    assert not torch.allclose(other.prior_, drawn)


def test_vector_prior_is_validated_and_broadcast_to_heads():
    prior = [0.4, 0.3, 0.2, 0.1]
    lab = SinkhornLabeler(4, n_heads=2, prior=prior).fit(logits(100, 4, 13, heads=2))
    assert lab.prior_.shape == (2, 4)
    assert torch.allclose(lab.prior_, torch.tensor([prior, prior], dtype=F64))


@pytest.mark.parametrize("heads", [None, 2])
def test_state_dict_round_trip_restores_warm_start_and_prior(heads):
    x0 = logits(300, 6, 14, heads=heads)
    x1 = drift(x0, 15)
    kw = dict(n_heads=heads or 1, prior="gaussian", tol=1e-4, anderson=0)
    lab = SinkhornLabeler(6, random_state=2, **kw).fit(x0)
    buf = io.BytesIO()
    torch.save(lab.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf)
    # a fresh labeler with another seed: the loaded prior and potentials take over
    restored = SinkhornLabeler(6, random_state=99, **kw).load_state_dict(state)
    assert torch.equal(restored.prior_, lab.prior_)
    restored.fit(x1)
    lab.fit(x1)
    cold = SinkhornLabeler(6, random_state=2, **kw).fit(x1)
    assert restored.n_iter_ == lab.n_iter_ < cold.n_iter_
    assert torch.equal(restored.labels_, lab.labels_)
    assert torch.equal(restored.prior_, lab.prior_)


def test_state_dict_before_fit_is_empty_and_loads():
    state = SinkhornLabeler(3).state_dict()
    assert state == {"prior": None, "log_v": None}
    lab = SinkhornLabeler(3).load_state_dict(state).fit(logits(30, 3, 16))
    assert lab.labels_.shape == (30,)


# --- decorrelated head groups --------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.integers(1, 24).flatmap(lambda h: st.tuples(st.just(h), st.integers(1, h))),
       st.integers(0, 2**31 - 1))
def test_head_groups_cover_every_head_once_with_near_equal_sizes(hg, seed):
    n_heads, n_groups = hg
    groups = decorrelated_head_groups(n_heads, n_groups, generator=torch.Generator().manual_seed(seed))
    assert len(groups) == n_groups
    assert sorted(torch.cat(groups).tolist()) == list(range(n_heads))
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    for g in groups:
        assert g.dtype == torch.int64
        assert g.tolist() == sorted(g.tolist())


def test_head_groups_reshuffle_across_calls_and_are_seeded():
    gen = torch.Generator().manual_seed(0)
    calls = [tuple(tuple(g.tolist()) for g in decorrelated_head_groups(10, 2, generator=gen))
             for _ in range(8)]
    assert len(set(calls)) > 1  # the head order is reshuffled at each clustering
    gen2 = torch.Generator().manual_seed(0)
    again = [tuple(tuple(g.tolist()) for g in decorrelated_head_groups(10, 2, generator=gen2))
             for _ in range(8)]
    assert again == calls  # reproducible with a seeded generator


@pytest.mark.parametrize("args,match", [((0, 1), "n_heads"), ((2.5, 1), "n_heads"), ((3, 4), "n_groups"),
                                        ((3, 0), "n_groups")])
def test_head_groups_errors(args, match):
    with pytest.raises(ValueError, match=match):
        decorrelated_head_groups(*args)


def test_head_groups_drive_a_multi_head_fit():
    """Usage pattern of paper §3.3: each group's heads get log-probs from their own pass."""
    n_heads, k = 4, 5
    groups = decorrelated_head_groups(n_heads, 2, generator=torch.Generator().manual_seed(1))
    passes = [logits(200, k, 20 + i, heads=n_heads) for i in range(2)]
    x = torch.empty(n_heads, 200, k)
    for gi, heads in enumerate(groups):
        x[heads] = passes[gi][heads]
    lab = SinkhornLabeler(k, n_heads=n_heads).fit(x)
    for gi, heads in enumerate(groups):
        for h in heads.tolist():
            single = sinkhorn(torch.log_softmax(passes[gi][h], -1), tol=lab.tol)
            agree = (lab.labels_[h] == single.labels).double().mean()
            assert float(agree) >= 0.97
    assert np.isfinite(lab.result_.error.numpy()).all()
