"""Bad input gives a clear error that names the problem (checked once, at the public boundary)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otcluster import SinkhornLabeler, average_views, sinkhorn, sinkhorn_features

# small problems: numba's thread pool would dominate (see conftest.serial_numba)
pytestmark = pytest.mark.usefixtures("serial_numba")

NAN, INF = float("nan"), float("inf")


def good(n: int = 12, k: int = 3, heads: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn((n, k) if heads is None else (heads, n, k), generator=g).log_softmax(-1)


def with_value(value: float, at=(3, 1), heads: int | None = None) -> torch.Tensor:
    x = good(heads=heads)
    x[(0, *at) if heads else at] = value
    return x


# --- the log-probabilities -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize("heads", [None, 2])
def test_non_finite_log_p(value, dtype, backend, heads):
    x = with_value(value, heads=heads).to(dtype)
    with pytest.raises(ValueError, match="log_p contains non-finite"):
        sinkhorn(x, backend=backend, dtype=dtype)
    with pytest.raises(ValueError, match="non-finite"):
        sinkhorn(x.numpy(), backend=backend)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((3, 5), r"K=5 clusters is more than N=3 samples.*sinkhorn_codes"),
        ((2, 4, 6), r"K=6 clusters is more than N=4"),
        ((10, 1), r"at least K=2 clusters, got K=1"),
        ((10, 0), r"at least K=2"),
        ((0, 4), r"no samples \(N=0\)"),
        ((2, 0, 4), r"no samples \(N=0\)"),
        ((8,), r"log_p must be 2-D or 3-D, got shape \(8,\)"),
        ((2, 2, 3, 4), r"log_p must be 2-D or 3-D"),
        ((), r"2-D or 3-D"),
    ],
)
def test_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(torch.zeros(shape))


@pytest.mark.parametrize(
    "data",
    [
        torch.zeros(6, 3, dtype=torch.int64),
        torch.zeros(6, 3, dtype=torch.int32),
        torch.zeros(6, 3, dtype=torch.bool),
        torch.zeros(6, 3, dtype=torch.complex64),
        np.zeros((6, 3), dtype=np.int64),
        np.zeros((6, 3), dtype=bool),
        np.zeros((6, 3), dtype=np.complex128),
    ],
    ids=["torch-int64", "torch-int32", "torch-bool", "torch-complex", "np-int64", "np-bool", "np-complex"],
)
def test_non_floating_dtypes_are_type_errors(data):
    with pytest.raises(TypeError, match="floating dtype"):
        sinkhorn(data)


@pytest.mark.parametrize("data", ["abc", None, 3.0, {1, 2}])
def test_non_arrays_are_type_errors(data):
    with pytest.raises(TypeError, match="log_p"):
        sinkhorn(data)


# --- scalar parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0, 0.0, -1.0, NAN, INF, -INF])
def test_bad_lam(lam):
    with pytest.raises(ValueError, match="lam must be a positive finite number"):
        sinkhorn(good(), lam=lam)


@pytest.mark.parametrize("lam", ["twenty", None, [1.0, 2.0]])
def test_non_numeric_lam(lam):
    with pytest.raises(TypeError, match="lam"):
        sinkhorn(good(), lam=lam)


@pytest.mark.parametrize("tol", [0, 0.0, -1e-3, NAN, INF])
def test_bad_tol(tol):
    with pytest.raises(ValueError, match="tol must be a positive number"):
        sinkhorn(good(), tol=tol)


@pytest.mark.parametrize("max_iter", [0, -5, 2.5])
def test_bad_max_iter(max_iter):
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        sinkhorn(good(), max_iter=max_iter)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(overrelax=0.0), ValueError, "overrelax"),
    (dict(overrelax=2.0), ValueError, "overrelax"),
    (dict(anderson=-1), ValueError, "anderson"),
    (dict(anderson=1.5), ValueError, "anderson"),
    (dict(dtype=torch.float16), TypeError, "dtype must be torch.float32 or torch.float64"),
    (dict(dtype=torch.int32), TypeError, "dtype"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
])
def test_bad_solver_options(kwargs, err, match):
    with pytest.raises(err, match=match):
        sinkhorn(good(), **kwargs)


@pytest.mark.cuda
def test_numba_backend_refuses_non_cpu_input():
    with pytest.raises(ValueError, match="backend='numba' needs a CPU tensor"):
        sinkhorn(good().cuda(), backend="numba")


# --- priors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "prior,match",
    [
        ([0.5, 0.5], r"prior has length 2 but there are K=3 clusters"),
        ([0.25, 0.25, 0.25, 0.25], r"prior has length 4"),
        ([1.2, -0.2, 0.0], "prior contains negative values"),
        ([0.5, 0.2, 0.2], r"prior must sum to 1"),
        ([0.6, 0.6, 0.6], r"prior must sum to 1"),
        ([NAN, 0.5, 0.5], "prior contains non-finite values"),
        ([INF, 0.0, 0.0], "prior contains non-finite values"),
        ([[0.5, 0.25, 0.25]] * 2, r"does not match n_heads"),
        ([[[1 / 3] * 3]], r"prior must be 1-D \(K,\) or 2-D \(H, K\)"),
        ("pareto", "prior kind must be one of"),
    ],
)
def test_bad_prior(prior, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(good(), prior=prior)


def test_bad_prior_for_heads():
    x = good(heads=2)
    with pytest.raises(ValueError, match=r"does not match n_heads=2"):
        sinkhorn(x, prior=[[1 / 3] * 3] * 3)
    with pytest.raises(ValueError, match=r"prior has 2 columns but there are K=3"):
        sinkhorn(x, prior=[[0.5, 0.5]] * 2)
    with pytest.raises(ValueError, match="sum to 1"):
        sinkhorn(x, prior=[[1 / 3] * 3, [0.5, 0.5, 0.5]])


def test_prior_of_the_wrong_type():
    with pytest.raises(TypeError, match="prior must be a string or a numeric vector"):
        sinkhorn(good(), prior=object())


# --- warm start ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "warm,heads,match",
    [
        (torch.zeros(4), None, r"warm_start has shape \(1, 4\), expected \(3,\) or \(1, 3\)"),
        (torch.zeros(2, 3), None, r"warm_start has shape \(2, 3\)"),
        (torch.zeros(3, 3), 2, r"warm_start has shape \(3, 3\), expected \(3,\) or \(2, 3\)"),
        (torch.zeros(5), 2, r"warm_start has shape"),
        (torch.tensor([0.0, NAN, 1.0]), None, "warm_start potentials contain non-finite values"),
        (torch.tensor([0.0, INF, 1.0]), None, "warm_start potentials contain non-finite"),
    ],
)
def test_bad_warm_start(warm, heads, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(good(heads=heads), warm_start=warm)


def test_warm_start_from_a_result_of_another_size():
    other = sinkhorn(good(k=4))
    with pytest.raises(ValueError, match="warm_start has shape"):
        sinkhorn(good(k=3), warm_start=other)


# --- sinkhorn_features -----------------------------------------------------------------------------

def feats():
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, generator=g)


@pytest.mark.parametrize(
    "mutate,err,match",
    [
        (lambda f, w, b: (f[:, :3], w, b), ValueError, r"features have D=3 columns but weight expects D=4"),
        (lambda f, w, b: (f, w, b[:2]), ValueError, r"bias has shape \(2,\), expected \(3,\)"),
        (lambda f, w, b: (f[0], w, b), ValueError, "features must be 2-D"),
        (lambda f, w, b: (f, w[0], b), ValueError, "weight must be 2-D or 3-D"),
        (lambda f, w, b: (f[:2], w, b), ValueError, r"K=3 clusters is more than N=2"),
        (lambda f, w, b: (f[:0], w, b), ValueError, r"N=0"),
        (lambda f, w, b: (f, w[:1], b[:1]), ValueError, r"at least K=2"),
        (lambda f, w, b: (f.long(), w, b), TypeError, "features must have a floating dtype"),
        (lambda f, w, b: (f, w.int(), b), TypeError, "weight must have a floating dtype"),
        (lambda f, w, b: (f.index_fill(0, torch.tensor([2]), NAN), w, b), ValueError,
         "features contains non-finite"),
        (lambda f, w, b: (f, w.index_fill(0, torch.tensor([1]), INF), b), ValueError,
         "weight contains non-finite"),
        (lambda f, w, b: (f, w, b.index_fill(0, torch.tensor([0]), NAN)), ValueError,
         "bias contains non-finite"),
    ],
)
def test_bad_features_input(mutate, err, match):
    f, w, b = mutate(*feats())
    with pytest.raises(err, match=match):
        sinkhorn_features(f, w, b)


def test_features_checked_block_by_block_with_a_count():
    """Non-finite features anywhere are found and counted, without a full-size boolean copy
    (which was most of the extra memory of a 2M x 512 memory-bounded solve)."""
    from torch.profiler import ProfilerActivity, profile

    f = torch.randn(20_000, 64)
    f[19_999, :3] = NAN
    f[7, 0] = INF
    _, w, b = feats()
    w = torch.randn(3, 64)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with pytest.raises(ValueError, match=r"features contains non-finite values \(4 entries"):
            sinkhorn_features(f, w, b, block_rows=1000)
    peak_extra = max(e.cpu_memory_usage for e in prof.events() if e.cpu_parent is None)
    assert peak_extra < 0.1 * f.numel()  # booleans of one 1000-row block, not of all 20k rows


@pytest.mark.parametrize("kwargs,match", [
    (dict(block_rows=0), "block_rows must be >= 1"),
    (dict(lam=-2.0), "lam"),
    (dict(tol=0.0), "tol"),
    (dict(max_iter=0), "max_iter"),
    (dict(prior=[0.5, 0.5]), "length 2"),
    (dict(warm_start=torch.zeros(7)), "warm_start"),
])
def test_bad_features_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn_features(*feats(), **kwargs)


# --- labeler and views ----------------------------------------------------------------------------

@pytest.mark.parametrize("views,match", [
    ({"audio": good(12, 3), "video": good(10, 3)}, r"audio is \(12, 3\) but video is \(10, 3\)"),
    ({"audio": good(12, 3), "video": good(12, 4)}, r"audio is \(12, 3\) but video is \(12, 4\)"),
    ([good(12, 3), good(12, 3), good(11, 3)], r"views\[0\] is \(12, 3\) but views\[2\] is \(11, 3\)"),
    ([good(12, 3), good(12, 3, heads=2)], r"same shape"),
])
def test_views_of_different_shapes(views, match):
    with pytest.raises(ValueError, match=match):
        average_views(views)
    with pytest.raises(ValueError, match="all views must have the same shape"):
        SinkhornLabeler(3).fit(views)


def test_views_errors():
    with pytest.raises(ValueError, match="no views given"):
        average_views({})
    with pytest.raises(TypeError, match="video must have a floating dtype"):
        average_views({"audio": good(), "video": torch.zeros(12, 3, dtype=torch.int64)})
    with pytest.raises(ValueError, match="non-finite"):
        SinkhornLabeler(3).fit({"audio": good(), "video": with_value(NAN)})


@pytest.mark.parametrize("make,x,match", [
    (lambda: SinkhornLabeler(4), good(12, 3), r"expected input of shape \(N, 4\)"),
    (lambda: SinkhornLabeler(3, n_heads=2), good(12, 3), r"n_heads=2 expects input of shape \(2, N, 3\)"),
    (lambda: SinkhornLabeler(3, n_heads=2), good(12, 3, heads=3), r"expected input of shape"),
    (lambda: SinkhornLabeler(1), good(12, 1), "n_clusters must be >= 2"),
    (lambda: SinkhornLabeler(3, prior="pareto"), good(), "prior must be one of"),
    (lambda: SinkhornLabeler(3, prior=[0.5, 0.5]), good(), "prior has length 2"),
    (lambda: SinkhornLabeler(3, prior=[0.5, 0.6, -0.1]), good(), "negative"),
    (lambda: SinkhornLabeler(3, lam=0.0), good(), "lam"),
    (lambda: SinkhornLabeler(3, tol=-1.0), good(), "tol"),
    (lambda: SinkhornLabeler(3, max_iter=0), good(), "max_iter"),
])
def test_labeler_errors(make, x, match):
    with pytest.raises(ValueError, match=match):
        make().fit(x)


def test_labeler_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="floating dtype"):
        SinkhornLabeler(3).fit(torch.zeros(12, 3, dtype=torch.int64))


# --- issue 12: inputs seen in practice --------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_float32_kernel_refuses_log_p_too_large_for_it(backend):
    """float64 log-probs x 1e300 gave a NaN plan after one pass (numba) or blamed NaN input
    (torch) with the float32 kernel; float64 solves them."""
    x = good(200, 5).double() * 1e300
    with pytest.raises(ValueError, match=r"lam \* log_p (is too large for|overflows) the"):
        sinkhorn(x, backend=backend)
    res = sinkhorn(x, backend=backend, dtype=torch.float64, max_iter=20, anderson=0)
    assert torch.isfinite(res.error) and torch.isfinite(res.log_v).all()
    assert torch.equal(res.labels, x.argmax(1))  # hard assignment at this scale


def test_the_warning_names_the_real_reason_to_stop(monkeypatch):
    """A non-finite column error stops the loop at once: never blame max_iter for it."""
    from otcluster import ConvergenceWarning
    from otcluster._solver import _ops

    def nan_pass(self, v):  # a pass whose column sums come out NaN
        self.u = torch.ones(self.shape[:2], dtype=self.kmat.dtype)
        return torch.full((1, 3), float("nan"), dtype=torch.float64)

    monkeypatch.setattr(_ops.DenseTorch, "fused", nan_pass)
    with pytest.warns(ConvergenceWarning) as rec:
        res = sinkhorn(good(), backend="torch")
    msg = str(rec[0].message)
    assert res.n_iter == 1 and "stopped after 1 passes" in msg and "not finite" in msg
    assert "max_iter" not in msg


def test_numpy_arrays_with_negative_strides_are_accepted():
    x = good(40, 4).numpy()
    rev = x[::-1]
    assert any(s < 0 for s in rev.strides)
    want = sinkhorn(np.ascontiguousarray(rev))
    got = sinkhorn(rev)
    assert torch.equal(got.labels, want.labels) and torch.equal(got.log_v, want.log_v)
    assert torch.equal(SinkhornLabeler(4).fit(rev).labels_, SinkhornLabeler(4).fit(
        np.ascontiguousarray(rev)).labels_)
    f = np.random.default_rng(0).normal(size=(40, 6))
    w = np.random.default_rng(1).normal(size=(4, 6))
    a = sinkhorn_features(f[::-1], w[:, ::-1])
    b = sinkhorn_features(np.ascontiguousarray(f[::-1]), np.ascontiguousarray(w[:, ::-1]))
    assert torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("warm", ["abc", 3, object()])
def test_warm_start_of_the_wrong_type_names_warm_start(warm):
    with pytest.raises(TypeError, match="warm_start must be a SinkhornResult"):
        sinkhorn(good(), warm_start=warm)


def test_labeler_with_fewer_samples_than_clusters_points_to_sinkhorn_codes():
    with pytest.raises(ValueError, match=r"K=5 clusters is more than N=3 samples.*sinkhorn_codes"):
        SinkhornLabeler(5).fit(good(3, 5))
    with pytest.raises(ValueError, match="sinkhorn_codes"):
        SinkhornLabeler(5).fit_features(torch.randn(3, 4), torch.randn(5, 4))


def test_one_input_coercer_for_the_core():
    """Solver, alignment, metrics and the k-means baseline coerce inputs the same way: the
    wrong kind of numbers is an InputDTypeError (a TypeError and a ValueError) naming the input,
    and numpy views with negative strides are accepted."""
    from otcluster import align, kmeans_baseline, nmi_score
    from otcluster._validation import InputDTypeError

    ints = np.zeros((6, 3), dtype=np.int64)
    for call, name in ((lambda: sinkhorn(ints), "log_p"), (lambda: align(ints, ints), "p_a"),
                       (lambda: nmi_score(np.zeros(4), np.zeros(4, dtype=int)), "y_true"),
                       (lambda: kmeans_baseline(np.array([["a", "b"]]), 1), "features")):
        with pytest.raises(InputDTypeError, match=name) as err:
            call()
        assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)
    p = np.full((8, 3), 1 / 3)[::-1]
    assert align(p, p).permutation.tolist() == [0, 1, 2]
    y = np.arange(8)[::-1] % 2
    assert nmi_score(y, y) == pytest.approx(1.0)
