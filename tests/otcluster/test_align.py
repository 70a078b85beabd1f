"""Tests of cluster alignment (paper eq. 7): exact assignment, greedy search, layer permutation."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otcluster import (
    AlignResult,
    align,
    align_from_cost,
    alignment_cost_matrix,
    permute_linear,
    permute_linear_,
)

cuda = pytest.mark.cuda  # skipped without a device (tests/conftest.py); run by `pytest -m cuda`


def softmax_probs(n: int, k: int, seed: int, *, scale: float = 2.0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), 1).to(dtype)


def naive_cost(p_a: torch.Tensor, p_b: torch.Tensor) -> np.ndarray:
    a = p_a.double().numpy()
    b = p_b.double().numpy()
    return np.abs(a[:, :, None] - b[:, None, :]).sum(0)


def direct_cost(p_a: torch.Tensor, p_b: torch.Tensor, perm) -> float:
    return float((p_a.double()[:, torch.as_tensor(perm)] - p_b.double()).abs().sum())


instances = st.tuples(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**31 - 1),
                      st.floats(0.1, 6.0))


# --- cost matrix -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_cost_matrix_matches_naive(backend, dtype):
    p_a = softmax_probs(301, 7, 0, dtype=dtype)
    p_b = softmax_probs(301, 7, 1, dtype=dtype)
    cost = alignment_cost_matrix(p_a, p_b, backend=backend, block_size=50)
    assert cost.dtype == torch.float64 and cost.shape == (7, 7)
    np.testing.assert_allclose(cost.numpy(), naive_cost(p_a, p_b), rtol=1e-5)


def test_cost_matrix_backends_agree_across_many_flushes():
    # More rows than one float32 accumulation window, several chunks per thread.
    p_a = softmax_probs(5000, 13, 2)
    p_b = softmax_probs(5000, 13, 3)
    c_numba = alignment_cost_matrix(p_a, p_b, backend="numba")
    c_torch = alignment_cost_matrix(p_a, p_b, backend="torch", block_size=777)
    np.testing.assert_allclose(c_numba.numpy(), c_torch.numpy(), rtol=1e-5)


def test_cost_matrix_accepts_numpy():
    p_a = softmax_probs(20, 3, 4, dtype=torch.float64)
    p_b = softmax_probs(20, 3, 5, dtype=torch.float64)
    np.testing.assert_allclose(alignment_cost_matrix(p_a.numpy(), p_b.numpy()).numpy(),
                               naive_cost(p_a, p_b), rtol=1e-12)


# --- exact alignment ---------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(instances)
def test_exact_equals_brute_force(instance):
    n, k, seed, scale = instance
    p_a = softmax_probs(n, k, seed, scale=scale, dtype=torch.float64)
    p_b = softmax_probs(n, k, seed + 1, scale=scale, dtype=torch.float64)
    res = align(p_a, p_b)
    best = min(direct_cost(p_a, p_b, list(perm)) for perm in itertools.permutations(range(k)))
    assert isinstance(res, AlignResult) and res.method == "exact"
    assert sorted(res.permutation.tolist()) == list(range(k))
    assert res.cost == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert res.cost == pytest.approx(direct_cost(p_a, p_b, res.permutation), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(instances, st.integers(0, 1000))
def test_exact_never_worse_than_greedy(instance, greedy_seed):
    n, k, seed, scale = instance
    k = k + 4  # up to 10 clusters: room for the greedy search to get stuck
    p_a = softmax_probs(n, k, seed, scale=scale)
    p_b = softmax_probs(n, k, seed + 1, scale=scale)
    exact = align(p_a, p_b)
    greedy = align(p_a, p_b, method="greedy", n_steps=200, patience=20, n_restarts=2,
                   seed=greedy_seed)
    assert greedy.method == "greedy"
    assert sorted(greedy.permutation.tolist()) == list(range(k))
    assert greedy.cost == pytest.approx(direct_cost(p_a, p_b, greedy.permutation), rel=1e-5)
    assert exact.cost <= greedy.cost + 1e-9


@pytest.mark.parametrize("method", ["exact", "greedy"])
def test_recovers_known_permutation(method):
    k = 12
    p_b = softmax_probs(400, k, 7, scale=3.0)
    shuffle = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    p_a = p_b[:, shuffle]  # column j of p_a is column shuffle[j] of p_b
    res = align(p_a, p_b, method=method, seed=0)
    assert torch.equal(p_a[:, res.permutation], p_b)
    assert torch.equal(shuffle[res.permutation], torch.arange(k))
    assert res.cost == pytest.approx(0.0, abs=1e-9)


def test_recovers_permutation_under_noise():
    k = 30
    logits = 3.0 * torch.randn(2000, k, generator=torch.Generator().manual_seed(3))
    noise = 0.5 * torch.randn(2000, k, generator=torch.Generator().manual_seed(4))
    shuffle = torch.randperm(k, generator=torch.Generator().manual_seed(5))
    p_b = torch.softmax(logits, 1)
    p_a = torch.softmax(logits + noise, 1)[:, shuffle]
    res = align(p_a, p_b)
    assert torch.equal(shuffle[res.permutation], torch.arange(k))


def test_greedy_is_reproducible_with_seed_and_improves_on_identity():
    p_a = softmax_probs(200, 9, 11)
    p_b = softmax_probs(200, 9, 12)
    r1 = align(p_a, p_b, method="greedy", seed=3, n_steps=500, patience=50)
    r2 = align(p_a, p_b, method="greedy", seed=3, n_steps=500, patience=50)
    assert torch.equal(r1.permutation, r2.permutation) and r1.cost == r2.cost
    assert r1.cost <= direct_cost(p_a, p_b, list(range(9))) + 1e-9


def test_float64_and_float32_give_same_permutation():
    p_a = softmax_probs(500, 8, 21, dtype=torch.float64)
    p_b = softmax_probs(500, 8, 22, dtype=torch.float64)
    r64 = align(p_a, p_b)
    r32 = align(p_a.float(), p_b.float())
    assert torch.equal(r64.permutation, r32.permutation)
    assert r32.cost == pytest.approx(r64.cost, rel=1e-5)


# --- alignment from a given cost matrix ------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_align_from_cost_equals_brute_force(k, seed):
    cost = np.random.default_rng(seed).normal(size=(k, k))
    res = align_from_cost(cost)
    best = min(cost[list(p), np.arange(k)].sum() for p in itertools.permutations(range(k)))
    assert sorted(res.permutation.tolist()) == list(range(k))
    assert res.cost == pytest.approx(best, rel=1e-12, abs=1e-12)
    assert res.cost == pytest.approx(cost[res.permutation.numpy(), np.arange(k)].sum(), abs=1e-12)


@pytest.mark.parametrize("method", ["exact", "greedy"])
def test_align_from_summed_shard_costs_equals_align_on_all_samples(method):
    """The distributed use: each shard builds its cost matrix, the sum aligns the whole set."""
    p_a, p_b = softmax_probs(300, 7, 1), softmax_probs(300, 7, 2)
    shards = [slice(0, 100), slice(100, 220), slice(220, 300)]
    cost = sum(alignment_cost_matrix(p_a[s], p_b[s]) for s in shards)
    whole = align(p_a, p_b, method=method, seed=3)
    got = align_from_cost(cost, method=method, seed=3)
    assert torch.equal(got.permutation, whole.permutation)
    assert got.cost == pytest.approx(whole.cost, rel=1e-6)  # float32 inputs, other summation order


@pytest.mark.parametrize(
    "cost, match",
    [
        (np.ones((2, 3)), "square"),
        (np.ones(3), "square"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "NaN or infinite"),
        (np.array([[0.0, np.inf], [1.0, 0.0]]), "NaN or infinite"),
    ],
)
def test_align_from_cost_bad_input_raises(cost, match):
    with pytest.raises(ValueError, match=match):
        align_from_cost(cost)
    with pytest.raises(ValueError, match="method"):
        align_from_cost(np.eye(2), method="auction")



# --- input validation --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("p_a", "p_b", "match"),
    [
        (torch.full((4,), 0.25), torch.full((4,), 0.25), "2-D"),
        (torch.full((3, 4), 0.25), torch.full((3, 2), 0.5), "same shape"),
        (torch.tensor([[1.5, -0.5], [0.5, 0.5]]), torch.full((2, 2), 0.5), "negative"),
        (torch.tensor([[0.7, 0.7], [0.5, 0.5]]), torch.full((2, 2), 0.5), "sum to 1"),
        (torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]), torch.full((2, 2), 0.5), "NaN"),
        (torch.full((2, 2), 0.5), torch.tensor([[float("inf"), 0.5], [0.5, 0.5]]), "NaN"),
        (torch.zeros(0, 3), torch.zeros(0, 3), "non-empty"),
        (np.ones((2, 2), dtype=np.int64), np.ones((2, 2), dtype=np.int64), "floating"),
    ],
)
def test_bad_input_raises(p_a, p_b, match):
    with pytest.raises(ValueError, match=match):
        align(p_a, p_b)


def test_bad_parameters_raise():
    p = softmax_probs(10, 3, 0)
    with pytest.raises(ValueError, match="method"):
        align(p, p, method="hungarian")
    with pytest.raises(ValueError, match="n_steps"):
        align(p, p, method="greedy", n_steps=0)
    with pytest.raises(ValueError, match="block_size"):
        align(p, p, block_size=-1)
    with pytest.raises(ValueError, match="backend"):
        alignment_cost_matrix(p, p, backend="cuda")
    with pytest.raises(TypeError, match="tensor or numpy"):
        align([[0.5, 0.5]], [[0.5, 0.5]])


# --- nn.Linear helpers -------------------------------------------------------------------------

# The parameters are reordered without arithmetic, so they are compared bit for bit (that is
# the contract). The layer's OUTPUTS are not: BLAS may block a matmul differently for another
# row order of the weight (it does on AMD EPYC), so outputs are compared with a tolerance.
OUT_TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.mark.parametrize("bias", [True, False])
def test_permute_linear_in_place_permutes_parameters_and_outputs(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 7, bias=bias)
    x = torch.randn(11, 5)
    before = layer(x).detach()
    w_before = layer.weight.detach().clone()
    b_before = None if layer.bias is None else layer.bias.detach().clone()
    weight_id = id(layer.weight)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(2))
    out = permute_linear_(layer, perm)
    assert out is layer and id(layer.weight) == weight_id  # same Parameter, still registered
    assert torch.equal(layer.weight, w_before[perm])
    if bias:
        assert torch.equal(layer.bias, b_before[perm])
    torch.testing.assert_close(layer(x), before[:, perm], **OUT_TOL)
    assert layer.weight.requires_grad


def test_permute_linear_copy_leaves_original_untouched():
    torch.manual_seed(1)
    layer = torch.nn.Linear(4, 6)
    x = torch.randn(3, 4)
    before = layer(x).detach()
    perm = [5, 4, 3, 2, 1, 0]
    w_before, b_before = layer.weight.detach().clone(), layer.bias.detach().clone()
    new = permute_linear(layer, perm)
    assert new is not layer
    assert torch.equal(layer.weight, w_before) and torch.equal(layer.bias, b_before)
    torch.testing.assert_close(layer(x), before, **OUT_TOL)
    assert torch.equal(new.weight, w_before[perm]) and torch.equal(new.bias, b_before[perm])
    torch.testing.assert_close(new(x), before[:, perm], **OUT_TOL)


def test_align_then_permute_linear_aligns_heads():
    torch.manual_seed(3)
    x = torch.randn(300, 8)
    head_b = torch.nn.Linear(8, 6)
    head_a = permute_linear(head_b, torch.randperm(6))
    with torch.no_grad():
        p_a, p_b = torch.softmax(head_a(x), 1), torch.softmax(head_b(x), 1)
    res = align(p_a, p_b)
    permute_linear_(head_a, res.permutation)
    assert torch.equal(head_a.weight, head_b.weight) and torch.equal(head_a.bias, head_b.bias)
    torch.testing.assert_close(head_a(x), head_b(x), **OUT_TOL)


def test_permute_linear_rejects_bad_permutations():
    layer = torch.nn.Linear(2, 3)
    with pytest.raises(ValueError, match="permutation of"):
        permute_linear_(layer, [0, 0, 1])
    with pytest.raises(ValueError, match="shape"):
        permute_linear_(layer, [0, 1])
    with pytest.raises(ValueError, match="integer"):
        permute_linear_(layer, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="nn.Linear"):
        permute_linear_(torch.nn.Conv1d(2, 3, 1), [0, 1, 2])


# --- CUDA --------------------------------------------------------------------------------------

@cuda
def test_cuda_matches_cpu():
    p_a = softmax_probs(3000, 17, 31)
    p_b = softmax_probs(3000, 17, 32)
    cpu = align(p_a, p_b)
    gpu = align(p_a.cuda(), p_b.cuda(), block_size=1000)
    assert gpu.permutation.device.type == "cuda"
    assert torch.equal(gpu.permutation.cpu(), cpu.permutation)
    assert gpu.cost == pytest.approx(cpu.cost, rel=1e-5)
    c_gpu = alignment_cost_matrix(p_a.cuda(), p_b.cuda(), backend="torch")
    np.testing.assert_allclose(c_gpu.cpu().numpy(), naive_cost(p_a, p_b), rtol=1e-5)
    layer = torch.nn.Linear(4, 17).cuda()
    x = torch.randn(5, 4, device="cuda")
    before = layer(x).detach()
    permute_linear_(layer, gpu.permutation)
    torch.testing.assert_close(layer(x), before[:, gpu.permutation], **OUT_TOL)


# --- import cost -------------------------------------------------------------------------------

def test_import_otcluster_leaves_heavy_optional_modules_unimported():
    """scipy.optimize (~0.3 s) is imported by the functions that use it, not by `import otcluster`
    (issue 12: 0.8-1.1 s over torch); numba, sklearn and matplotlib likewise."""
    code = ("import sys, otcluster, otcluster.metrics; "
            "print(sorted(m for m in ('scipy.optimize', 'numba', 'sklearn', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
    # and the lazy imports work where they are needed
    p = softmax_probs(50, 3, 0)
    assert align(p, p).cost == pytest.approx(0.0, abs=1e-9)
