"""Time cluster alignment (paper eq. 7) at VGG-Sound scale: 200k samples x 309 clusters.

Exact alignment = L1 cost matrix (numba, one pass over the rows) + Hungarian assignment;
greedy = the paper's random pair-switch search on the same cost matrix. The cost-matrix build
dominates both, so it is timed separately; torch.cdist row blocks are timed for comparison
(``--torch``, slow on CPU).

Usage: python benchmarks/bench_align.py [--n 200000] [--k 309] [--repeats 3] [--torch]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from otcluster._align import _exact_permutation, _greedy_permutation, align, alignment_cost_matrix


def random_softmax(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=g), 1)


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=309)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch", action="store_true", help="also time torch.cdist blocks")
    args = ap.parse_args()
    p_b = random_softmax(args.n, args.k, 0)
    # p_a: a shuffled, noisy copy of p_b, so that there is a meaningful optimum.
    shuffle = torch.randperm(args.k, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(args.n, args.k, generator=torch.Generator().manual_seed(2))
    p_a = torch.softmax(torch.log(p_b) + noise, 1)[:, shuffle]
    print(f"alignment at N={args.n}, K={args.k}, float32, {torch.get_num_threads()} torch threads")

    align(p_a[:1000], p_b[:1000])  # compile the numba kernels outside the timings
    align(p_a[:1000], p_b[:1000], method="greedy", n_steps=10, seed=0)

    t_cost, cost = best_of(lambda: alignment_cost_matrix(p_a, p_b).numpy(), args.repeats)
    t_lsa, perm = best_of(lambda: _exact_permutation(cost), args.repeats)
    t_greedy, gperm = best_of(lambda: _greedy_permutation(cost, 50000, 1000, 5, 0), 1)
    t_exact, exact = best_of(lambda: align(p_a, p_b), args.repeats)
    t_gall, greedy = best_of(lambda: align(p_a, p_b, method="greedy", seed=0), 1)
    recovered = bool(torch.equal(shuffle[exact.permutation], torch.arange(args.k)))
    print(f"  cost matrix (numba)          {t_cost:8.3f} s")
    print(f"  linear assignment (scipy)    {t_lsa:8.3f} s")
    print(f"  greedy search (5 restarts)   {t_greedy:8.3f} s")
    print(f"  align(method='exact')  total {t_exact:8.3f} s   cost {exact.cost:.1f}"
          f"   recovered shuffle: {recovered}")
    print(f"  align(method='greedy') total {t_gall:8.3f} s   cost {greedy.cost:.1f}"
          f"   ({100 * (greedy.cost / exact.cost - 1):.2f} % above exact)")
    assert np.array_equal(perm, exact.permutation.numpy()) and len(gperm) == args.k
    if args.torch:
        t_torch, c_t = best_of(
            lambda: alignment_cost_matrix(p_a, p_b, backend="torch").numpy(), 1)
        print(f"  cost matrix (torch.cdist)    {t_torch:8.3f} s   max rel. diff "
              f"{np.abs(c_t - cost).max() / np.abs(cost).max():.1e}")


if __name__ == "__main__":
    main()
