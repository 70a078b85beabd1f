"""Tests of ``otcluster.sinkhorn_codes``: SwAV's numbers for a fixed iteration count, converged
codes with a tolerance, warm start, gradients, dtypes, bad input, and sharding over 2 processes."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from otcluster import CodesResult, ConvergenceWarning, sinkhorn_codes


def swav_sinkhorn(out: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
                  world_size: int = 1, group=None) -> torch.Tensor:
    """SwAV's ``distributed_sinkhorn`` (facebookresearch/swav, main_swav.py), rewritten with its
    global ``args`` and world made explicit; the same operations in the same order."""
    with torch.no_grad():
        Q = torch.exp(out / epsilon).t()  # K x B
        B = Q.shape[1] * world_size
        K = Q.shape[0]
        sum_Q = torch.sum(Q)
        if group is not None:
            dist.all_reduce(sum_Q, group=group)
        Q /= sum_Q
        for _ in range(iterations):
            sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
            if group is not None:
                dist.all_reduce(sum_of_rows, group=group)
            Q /= sum_of_rows
            Q /= K
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B
        return Q.t()


def cosine_scores(n: int, k: int, d: int = 32, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """SwAV-like scores: normalised embeddings near some prototypes, against all prototypes."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    z = protos[torch.randint(0, k, (n,), generator=g)] * 1.5 + torch.randn(n, d, generator=g) / 2
    return (torch.nn.functional.normalize(z, dim=1) @ protos.T).to(dtype)


def assert_close(actual, expected, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """``|actual - expected| <= atol + rtol |expected|`` everywhere, same shape, compared in
    float64 on the CPU (so float32 / float16 codes compare with a float64 reference directly)."""
    a, b = torch.as_tensor(actual).double().cpu(), torch.as_tensor(expected).double().cpu()
    assert a.shape == b.shape, (a.shape, b.shape)
    excess = (a - b).abs() - (atol + rtol * b.abs())
    assert not bool((excess > 0).any()) and not bool(torch.isnan(a).any() ^ torch.isnan(b).any()), \
        f"max |diff| {float((a - b).abs().max()):.3g} beyond atol={atol:g}, rtol={rtol:g}"


def marginal_error(codes: torch.Tensor, prior: torch.Tensor | None = None) -> float:
    """Relative L1 error of the cluster marginal, measured from the codes themselves."""
    mass = codes.double().sum(0) / codes.shape[0]
    r = torch.full_like(mass, 1.0 / codes.shape[1]) if prior is None else prior.double()
    return float((mass - r).abs().sum() / r.sum())


# -- SwAV's numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize("n,k", [(256, 300), (40, 7), (7, 50)])
@pytest.mark.parametrize("n_iter", [1, 3, 5])
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_fixed_iterations_reproduce_swav_float64(n, k, n_iter, eps):
    s = cosine_scores(n, k, dtype=torch.float64)
    res = sinkhorn_codes(s, eps=eps, n_iter=n_iter)
    ref = swav_sinkhorn(s.clone(), eps, n_iter)
    assert_close(res.codes, ref, rtol=1e-10, atol=1e-14)
    assert res.n_iter == n_iter
    assert res.error.item() == pytest.approx(marginal_error(ref), rel=1e-6, abs=1e-12)


def test_fixed_iterations_reproduce_swav_float32_and_default_is_three():
    s = cosine_scores(512, 3000, d=128)
    ref = swav_sinkhorn(s.clone())
    res = sinkhorn_codes(s)  # eps 0.05, 3 iterations: SwAV's defaults
    assert res.n_iter == 3 and res.codes.dtype == torch.float32
    assert_close(res.codes, ref, rtol=2e-5, atol=1e-7)


def test_log_domain_reproduces_swav_where_swav_float32_overflows():
    # raw logits with eps 0.05: exp(S / eps) overflows float32 (SwAV returns NaN); the spread
    # (~300) is beyond the scaling form's limit, so the log domain runs
    g = torch.Generator().manual_seed(1)
    s = 2.5 * torch.randn(300, 40, generator=g)
    assert torch.isnan(swav_sinkhorn(s.clone())).any()
    ref = swav_sinkhorn(s.double(), iterations=4)  # float64 holds exp(200)
    res = sinkhorn_codes(s, n_iter=4)
    assert torch.isfinite(res.codes).all()
    assert_close(res.codes.double(), ref, rtol=0, atol=2e-4)
    res64 = sinkhorn_codes(s.double() * 4, n_iter=2)  # float64 log domain (spread > 600)
    assert_close(res64.codes, swav_sinkhorn(s.double() * 4 - 10, iterations=2),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("spread", [45.0, 69.0, 75.0])
def test_float32_near_the_scaling_limit_matches_float64(spread):
    """Both sides of the switch to the log domain (D = 70 in float32) keep float32 accuracy."""
    g = torch.Generator().manual_seed(0)
    s = torch.rand(3000, 500, generator=g) ** 3
    s[0, 0], s[1, 1] = 0.0, 1.0  # range exactly 1: (max - min) / eps = spread
    ref = sinkhorn_codes(s.double(), eps=1.0 / spread, n_iter=20)
    res = sinkhorn_codes(s, eps=1.0 / spread, n_iter=20)
    assert_close(res.codes, ref.codes, rtol=0, atol=2e-5)
    assert res.error.item() == pytest.approx(ref.error.item(), abs=1e-5)


@pytest.mark.parametrize("offset", [30.0, 1e3, 1e5])
def test_a_large_common_offset_costs_no_float32_digits(offset):
    """Codes do not change with a constant added to every score; float32 inputs far from 0 keep
    the digits they have (the shift by the maximum is done before the division by eps)."""
    s = torch.rand(300, 40, generator=torch.Generator().manual_seed(0)) + offset
    ref = sinkhorn_codes(s.double(), n_iter=3).codes
    assert_close(sinkhorn_codes(s, n_iter=3).codes, ref, rtol=0, atol=1e-6)


# -- converged codes --------------------------------------------------------------------------------

@pytest.mark.parametrize("n,k,eps", [(256, 3000, 0.05), (1000, 30, 0.05), (64, 10, 0.5), (300, 40, 0.02)])
def test_tolerance_gives_converged_codes(n, k, eps):
    s = cosine_scores(n, k, d=64, seed=n + k)
    res = sinkhorn_codes(s, eps=eps, tol=1e-3)
    assert res.error.item() <= 1e-3
    assert marginal_error(res.codes) <= 1.01e-3  # measured from the codes, not the solver
    assert_close(res.codes.sum(1), torch.ones(n), rtol=0, atol=1e-4)
    assert (res.codes >= 0).all()
    # the codes are the softmax of the scaled scores plus the returned column potentials
    again = torch.softmax(s.double() / eps + res.log_v, dim=1)
    assert_close(res.codes.double(), again, rtol=0, atol=1e-5)


def test_converged_codes_agree_with_a_long_float64_run():
    s = cosine_scores(200, 500, d=16, seed=3)
    ref = sinkhorn_codes(s.double(), n_iter=3000).codes
    assert marginal_error(ref) < 1e-9
    res = sinkhorn_codes(s, tol=1e-5)
    assert_close(res.codes.double(), ref, rtol=0, atol=1e-4)
    swav3 = sinkhorn_codes(s, n_iter=3)
    assert (swav3.codes.double() - ref).abs().max() > 10 * (res.codes.double() - ref).abs().max()


def test_non_uniform_prior_and_zero_shares():
    k = 12
    prior = torch.linspace(1.0, 3.0, k)
    prior[[2, 7]] = 0.0
    prior /= prior.sum()
    s = cosine_scores(500, k, seed=5)
    res = sinkhorn_codes(s, eps=0.1, tol=1e-4, prior=prior)
    assert marginal_error(res.codes, prior) <= 1.5e-4
    assert res.codes[:, [2, 7]].abs().max() == 0 and torch.isinf(res.log_v[[2, 7]]).all()
    fixed = sinkhorn_codes(s, eps=0.1, n_iter=3, prior=prior.tolist())  # SwAV's loop, r instead of 1/K
    assert fixed.codes[:, [2, 7]].abs().max() == 0
    # order kept: the prior is not permuted onto the clusters
    mass = res.codes.double().mean(0)
    assert torch.equal(torch.argsort(mass[prior > 0]), torch.argsort(prior.double()[prior > 0]))


def test_convergence_warning_when_max_iter_is_too_small():
    s = cosine_scores(2000, 50, seed=2)
    with pytest.warns(ConvergenceWarning, match="did not reach tol=1e-06"):
        res = sinkhorn_codes(s.double(), eps=0.02, tol=1e-6, max_iter=2)
    assert res.n_iter == 2 and res.error.item() > 1e-6


def test_hard_problems_converge_with_acceleration():
    """Anderson steps with their safeguards reach tol on peaked, unbalanced problems."""
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        n, k = int(torch.randint(8, 400, (1,), generator=g)), int(torch.randint(2, 60, (1,), generator=g))
        s = torch.randn(n, k, generator=g) * float(torch.rand(1, generator=g)) * 3
        s[:, 0] += 2.0  # one popular prototype
        eps = float(torch.rand(1, generator=g)) * 0.3 + 0.02
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            res = sinkhorn_codes(s.double(), eps=eps, tol=1e-3, max_iter=1000)
        assert marginal_error(res.codes) <= 1.01e-3, (seed, n, k, eps)


# -- warm start ------------------------------------------------------------------------------------

def test_warm_start_from_converged_potentials_needs_no_iteration():
    s = cosine_scores(300, 100, seed=4)
    res = sinkhorn_codes(s, tol=1e-4)
    again = sinkhorn_codes(s, tol=1e-4, warm_start=res)
    assert again.n_iter == 0 and again.error.item() <= 1e-4
    assert_close(again.codes, res.codes, rtol=0, atol=1e-5)
    # a tensor works as well, and a fixed count makes that many iterations from it
    assert sinkhorn_codes(s, n_iter=2, warm_start=res.log_v).n_iter == 2


def test_warm_start_across_a_drifting_stream_stays_converged():
    g = torch.Generator().manual_seed(0)
    protos = torch.nn.functional.normalize(torch.randn(400, 32, generator=g), dim=1)
    state = None
    for _ in range(4):
        z = torch.nn.functional.normalize(protos[torch.randint(0, 400, (512,), generator=g)]
                                          + 0.6 * torch.randn(512, 32, generator=g), dim=1)
        res = sinkhorn_codes(z @ protos.T, tol=1e-3, warm_start=state)
        assert marginal_error(res.codes) <= 1.01e-3
        state = res.log_v
        protos = torch.nn.functional.normalize(protos + 0.01 * torch.randn(400, 32, generator=g), dim=1)


# -- tensors: gradients, dtypes, devices, buffers ----------------------------------------------------

def test_scores_with_gradients_give_codes_without_and_are_not_modified():
    w = torch.randn(64, 16, requires_grad=True)
    z = torch.nn.functional.normalize(torch.randn(100, 16), dim=1)
    s = z @ torch.nn.functional.normalize(w, dim=1).T
    before = s.detach().clone()
    for kw in ({}, {"tol": 1e-3}):
        res = sinkhorn_codes(s, **kw)
        assert not res.codes.requires_grad and res.codes.grad_fn is None
        assert torch.equal(s.detach(), before)
    loss = -(res.codes * torch.log_softmax(s / 0.1, dim=1)).sum(1).mean()  # the swapped loss
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    s = cosine_scores(128, 300, dtype=dtype)
    res = sinkhorn_codes(s, tol=1e-3)
    assert res.codes.dtype == dtype and res.log_v.dtype == torch.float64
    ref = sinkhorn_codes(s.float(), tol=1e-3).codes
    assert_close(res.codes.float(), ref, rtol=2e-2, atol=1e-3)


def test_numpy_and_non_contiguous_input():
    s = cosine_scores(100, 80)
    ref = sinkhorn_codes(s, n_iter=3).codes
    assert_close(sinkhorn_codes(s.numpy(), n_iter=3).codes, ref)
    assert_close(sinkhorn_codes(s.T.contiguous().T, n_iter=3).codes, ref)


def test_out_buffer_is_used():
    s = cosine_scores(100, 80)
    buf = torch.full_like(s, float("nan"))
    res = sinkhorn_codes(s, tol=1e-3, out=buf)
    assert res.codes.data_ptr() == buf.data_ptr()
    assert_close(buf, sinkhorn_codes(s, tol=1e-3).codes)
    half = s.half()
    hbuf = torch.empty_like(half)
    assert sinkhorn_codes(half, out=hbuf).codes.data_ptr() == hbuf.data_ptr()


@pytest.mark.cuda
def test_cuda_device_and_dtype_kept(cuda_device):
    s = cosine_scores(256, 3000, d=128)
    res = sinkhorn_codes(s.to(cuda_device), tol=1e-3)
    assert res.codes.device.type == "cuda" and res.log_v.device.type == "cuda"
    assert_close(res.codes.cpu(), sinkhorn_codes(s, tol=1e-3).codes, rtol=0, atol=1e-4)
    assert_close(sinkhorn_codes(s.to(cuda_device)).codes.cpu(), swav_sinkhorn(s.clone()),
                               rtol=1e-4, atol=1e-6)


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,kwargs,exc,match", [
    ("nan", {}, ValueError, r"scores contain non-finite values \(1 entries"),
    ("inf", {}, ValueError, "scores contain non-finite values"),
    ("1d", {}, ValueError, r"scores must be 2-D \(N samples, K prototypes\), got shape \(10,\)"),
    ("3d", {}, ValueError, "scores must be 2-D"),
    ("int", {}, TypeError, "scores must have a floating dtype"),
    ("list", {}, TypeError, "scores must be a torch tensor or numpy array, got list"),
    (None, {"eps": 0.0}, ValueError, "eps must be a positive finite number, got 0.0"),
    (None, {"eps": -1}, ValueError, "eps must be a positive"),
    (None, {"eps": float("nan")}, ValueError, "eps must be a positive"),
    (None, {"eps": "x"}, TypeError, "eps must be a positive number"),
    (None, {"prior": [0.5, 0.6, 0.0, 0.0, 0.0]}, ValueError, "prior must sum to 1.*sums 1.1"),
    (None, {"prior": [0.5, 0.5]}, ValueError, "prior has length 2 but there are K=5"),
    (None, {"prior": [1.5, -0.5, 0, 0, 0]}, ValueError, "prior contains negative values"),
    (None, {"prior": "gaussian"}, ValueError, "make_prior"),
    (None, {"n_iter": 3, "tol": 1e-3}, ValueError, "not both"),
    (None, {"n_iter": 0}, ValueError, "n_iter must be a positive integer"),
    (None, {"tol": 0.0}, ValueError, "tol must be a positive number"),
    (None, {"tol": 1e-3, "max_iter": 0}, ValueError, "max_iter must be a positive integer"),
    (None, {"warm_start": "abc"}, TypeError, "warm_start must be a CodesResult or a vector"),
    (None, {"warm_start": torch.zeros(4)}, ValueError, r"warm_start has shape \(4,\), expected \(5,\)"),
    (None, {"warm_start": torch.full((5,), float("nan"))}, ValueError, "warm_start has non-finite"),
    (None, {"out": torch.empty(10, 4)}, ValueError, "out must be a contiguous tensor"),
])
def test_bad_input_is_refused_with_a_clear_message(bad, kwargs, exc, match):
    s = torch.randn(10, 5)
    if bad == "nan":
        s[3, 2] = float("nan")
    elif bad == "inf":
        s[0, 0] = float("inf")
    elif bad == "1d":
        s = s[:, 0]
    elif bad == "3d":
        s = s[None]
    elif bad == "int":
        s = torch.ones(10, 5, dtype=torch.int64)
    elif bad == "list":
        s = s.tolist()
    with pytest.raises(exc, match=match):
        sinkhorn_codes(s, **kwargs)


def test_out_may_not_alias_scores_and_result_type():
    s = torch.randn(10, 5)
    with pytest.raises(ValueError, match="out must not be scores"):
        sinkhorn_codes(s, out=s)
    res = sinkhorn_codes(s)
    assert isinstance(res, CodesResult) and res.codes.shape == (10, 5)


# -- two processes ----------------------------------------------------------------------------------

WORLD = 2


def _shards(n: int) -> list[slice]:
    return [slice(0, n // 2), slice(n // 2, n)]


def _dist_worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        group = dist.group.WORLD
        sl = _shards(400)[rank]
        s = cosine_scores(400, 600, seed=9, dtype=torch.float64)[sl]
        raw = torch.randn(400, 30, generator=torch.Generator().manual_seed(3))[sl]
        res = {
            "swav_ref": swav_sinkhorn(s.clone(), world_size=WORLD, group=group),
            "fixed": sinkhorn_codes(s, n_iter=3, process_group=group),
            "tol": sinkhorn_codes(s.float(), tol=1e-4, process_group=group),
            "log": sinkhorn_codes(raw, tol=1e-5, process_group=group),
        }
        torch.save({k: tuple(v) if isinstance(v, CodesResult) else v for k, v in res.items()},
                   Path(out) / f"codes{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("codes_dist")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_dist_worker, args=(str(out / "store"), str(out)), nprocs=WORLD)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_sharded_codes_equal_the_single_process_codes(two_processes):
    parts = [torch.load(two_processes / f"codes{r}.pt") for r in range(WORLD)]
    s = cosine_scores(400, 600, seed=9, dtype=torch.float64)
    raw = torch.randn(400, 30, generator=torch.Generator().manual_seed(3))  # log domain (spread 140)
    single = {"fixed": sinkhorn_codes(s, n_iter=3), "tol": sinkhorn_codes(s.float(), tol=1e-4),
              "log": sinkhorn_codes(raw, tol=1e-5)}
    # SwAV's own distributed loop, sharded, equals ours sharded and ours in one process
    swav = torch.cat([p["swav_ref"] for p in parts])
    assert_close(swav, single["fixed"].codes, rtol=1e-10, atol=1e-14)
    for name, ref in single.items():
        codes = torch.cat([p[name][0] for p in parts])
        # only the order of float sums differs; converged codes are equal to about tol
        tol = {"fixed": 1e-12, "tol": 1e-4, "log": 1e-4}[name]
        assert_close(codes.double(), ref.codes.double(), rtol=0, atol=tol)
        for p in parts:  # potentials, iterations and error are the same on every process
            assert_close(p[name][1], parts[0][name][1], rtol=0, atol=0)
            assert abs(p[name][2] - ref.n_iter) <= (0 if name == "fixed" else 2)
            if name == "fixed":
                assert p[name][3].item() == pytest.approx(ref.error.item(), rel=1e-6, abs=1e-12)
            else:
                assert p[name][3].item() <= {"tol": 1e-4, "log": 1e-5}[name]
    assert marginal_error(torch.cat([p["log"][0] for p in parts])) <= 1.1e-5


def test_codes_of_k_greater_than_n_are_soft_and_balanced():
    s = cosine_scores(64, 1000, d=128, seed=11)
    res = sinkhorn_codes(s, tol=1e-3)
    mass = res.codes.double().sum(0)
    assert math.isclose(float(mass.sum()), 64.0, rel_tol=1e-5)
    assert float(mass.max()) < 0.2  # no prototype takes a sample's whole mass: soft codes
    assert np.isclose(marginal_error(res.codes), res.error.item(), rtol=1e-2, atol=1e-6)


def test_docstring_example_runs():
    import doctest
    import io

    from otcluster import _codes

    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in doctest.DocTestFinder().find(_codes) if t.examples]
    assert tests
    for test in tests:
        torch.manual_seed(0)
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 5 and result.failed == 0, out.getvalue()
