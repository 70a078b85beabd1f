"""Tests of the clustering schedule and the learning-rate warm-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from otcluster._schedule import LinearWarmup, WarmupCosine, clustering_steps


def paper_schedule(total: int, n: int, p: float) -> list[int]:
    """The public code's array, consumed from its end (the smallest step first)."""
    times = (total * (np.linspace(0, 1, n) ** p))[::-1]
    return sorted({int(np.floor(t + 1e-9)) for t in times})


@pytest.mark.parametrize("total,n,p", [(100, 5, 2.0), (1000, 100, 1.5), (37, 10, 1.0), (5000, 7, 3.0)])
def test_matches_paper_formula(total, n, p):
    steps = clustering_steps(total, n, p)
    assert steps == paper_schedule(total, n, p)
    assert steps[0] == 0 and steps[-1] == total
    assert all(a < b for a, b in zip(steps, steps[1:]))


def test_denser_early_for_power_above_one():
    steps = np.array(clustering_steps(10_000, 100, 1.5))
    first_half = int((steps < 5000).sum())
    assert first_half > 60  # (1/2) ** (1/1.5) = 63 % of the clusterings in the first half
    gaps = np.diff(steps)
    assert gaps[0] < gaps[-1]
    uniform = np.diff(clustering_steps(9900, 100, 1.0))
    assert set(uniform.tolist()) == {100}


def test_few_steps_deduplicates():
    assert clustering_steps(3, 10, 1.5) == [0, 1, 2, 3]
    assert clustering_steps(1, 100, 1.5) == [0, 1]
    assert clustering_steps(50, 1, 1.5) == [0]


@pytest.mark.parametrize("args,match", [
    ((0, 10, 1.5), "total_steps"), ((10.5, 10, 1.5), "total_steps"), ((10, 0, 1.5), "n_clusterings"),
    ((10, 5, 0.0), "power"), ((10, 5, float("nan")), "power"), ((True, 5, 1.0), "total_steps"),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        clustering_steps(*args)


def test_linear_warmup_with_lambda_lr_and_state_dict():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LinearWarmup(4))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"warmup_steps": 4}]
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, LinearWarmup(99))
    sched2.load_state_dict(state)
    assert sched2.lr_lambdas[0].warmup_steps == 4
    assert LinearWarmup(0)(0) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        LinearWarmup(-1)


@pytest.mark.parametrize("warmup,total", [(0, 1), (0, 10), (3, 4), (5, 100)])
def test_warmup_cosine_rises_then_falls_to_zero(warmup, total):
    f = WarmupCosine(warmup, total)
    vals = [f(s) for s in range(total + 1)]
    assert vals[total] == pytest.approx(0.0, abs=1e-12)
    assert all(0 <= v <= 1 for v in vals)
    rise, fall = vals[:warmup], vals[warmup:]
    assert rise == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert fall[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(fall, fall[1:]))  # never rises after the warm-up
    half = warmup + (total - warmup) / 2  # the cosine's midpoint: half the rate
    if float(half).is_integer():
        assert f(int(half)) == pytest.approx(0.5)
    # an independent formula for one point after the warm-up
    s = warmup + (total - warmup) // 3
    assert f(s) == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))


def test_warmup_cosine_state_dict_and_bad_arguments():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, 10))
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"warmup_steps": 2, "total_steps": 10}]
    sched2 = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([p], lr=0.1), WarmupCosine(0, 5))
    sched2.load_state_dict(state)
    assert (sched2.lr_lambdas[0].warmup_steps, sched2.lr_lambdas[0].total_steps) == (2, 10)
    for args in [(3, 3), (4, 2), (0, 0), (-1, 5), (0, 2.5)]:
        with pytest.raises(ValueError, match="warmup_steps|total_steps"):
            WarmupCosine(*args)
